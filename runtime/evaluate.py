"""Accuracy of any model file on a labelled folder (DIR/images + DIR/masks), with the paper's metrics.

Predictions are compared at the model's resolution (256x256), as the authors' test code does: each ground-truth
mask goes through the same antialiased resize as the images and is binarised at 0.5.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from .backends import Backend
from .imageio import find_images, read_image
from .metrics import ConfusionAccumulator
from .preprocess import _aa_bilinear_weights, preprocess


class DatasetError(ValueError):
    """The evaluation folder is not laid out as DIR/images + DIR/masks with matching stems."""


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0..1 mask resized like the authors' test path (torchvision antialiased bilinear on floats)."""
    h, w = mask.shape
    if (h, w) == (size, size):
        return mask
    return _aa_bilinear_weights(h, size) @ mask @ _aa_bilinear_weights(w, size).T


def paired_files(data: Path) -> list[tuple[Path, Path]]:
    images, masks = data / "images", data / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise DatasetError(f"{data}: expected sub-folders images/ and masks/ (masks: 0 = skin, 255 = lesion)")
    by_stem = {p.stem: p for p in find_images([masks])}
    pairs, unmatched = [], []
    for img in find_images([images]):
        (pairs if img.stem in by_stem else unmatched).append((img, by_stem.get(img.stem)))
    if unmatched:
        raise DatasetError(f"{data}: {len(unmatched)} images have no mask with the same stem, e.g. {unmatched[0][0].name}")
    if not pairs:
        raise DatasetError(f"{data}/images: no images found")
    return pairs  # type: ignore[return-value]


def evaluate(backend: Backend, data: Path | str, batch_size: int = 8, workers: int = 2) -> dict:
    """DSC, IoU, accuracy, sensitivity, specificity (one global confusion matrix) and mean per-image Dice."""
    data = Path(data)
    pairs = paired_files(data)
    size = backend.metadata.image_size
    acc = ConfusionAccumulator(backend.metadata.threshold)
    started = time.perf_counter()

    def load(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
        img, msk = pair
        mask = cv2.imread(str(msk), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise DatasetError(f"{msk}: unreadable mask")
        return preprocess(read_image(img), size), resize_mask(mask.astype(np.float64) / 255.0, size)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        loaded = pool.map(load, pairs)
        batch_x: list[np.ndarray] = []
        batch_y: list[np.ndarray] = []
        for x, y in loaded:
            batch_x.append(x)
            batch_y.append(y)
            if len(batch_x) == batch_size:
                for p, t in zip(backend.run(np.stack(batch_x)), batch_y):
                    acc.add(p[0], t)
                batch_x, batch_y = [], []
        if batch_x:
            for p, t in zip(backend.run(np.stack(batch_x)), batch_y):
                acc.add(p[0], t)
    result = acc.result()
    result.update({"data": str(data), "threshold": backend.metadata.threshold, "seconds": round(time.perf_counter() - started, 2)})
    result.update({f"model_{k}": v for k, v in backend.describe().items()})
    return result
