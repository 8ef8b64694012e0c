"""Folders of images, labelled and not: one loader for evaluation, training, calibration, parity and benchmarks.

A labelled folder holds ``images/`` and ``masks/`` (0 = skin, 255 = lesion), paired by file stem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .imageio import ImageReadError, find_images, read_image
from .preprocess import _aa_bilinear_weights, preprocess


class DatasetError(ValueError):
    """A folder cannot serve as asked (layout, unpaired or unreadable files, too few images)."""


@dataclass
class ImageBatch:
    """Preprocessed images (N, 3, S, S) with the files they came from and the files that could not be read."""

    images: np.ndarray
    paths: list[Path]
    skipped: list[str] = field(default_factory=list)


def first_images(folder: Path | str, count: int | None = None) -> list[Path]:
    """The first ``count`` image files of ``folder`` (sorted, recursive); refuses an empty folder."""
    paths = find_images([Path(folder)])[:count]
    if not paths:
        raise DatasetError(f"{folder}: no images (.jpg .png .bmp .tif) — point at a folder of dermoscopy images")
    return paths


def load_images(
    folder: Path | str, count: int, size: int, progress: Callable[[int, int], None] | None = None
) -> ImageBatch:
    """The first ``count`` readable images of ``folder``, preprocessed; unreadable files are skipped and listed."""
    if not Path(folder).is_dir():
        raise DatasetError(f"{folder}: not a folder of images")
    paths = first_images(folder)
    batch = ImageBatch(np.empty((0, 3, size, size), np.float32), [])
    loaded = []
    for p in paths:
        if len(loaded) == count:
            break
        try:
            loaded.append(preprocess(read_image(p), size))
            batch.paths.append(p)
        except ImageReadError as e:
            batch.skipped.append(str(e))
        if progress:
            progress(len(loaded), count)
    if not loaded:
        raise DatasetError(f"{folder}: none of the {len(paths)} image files is readable (first: {batch.skipped[0]})")
    batch.images = np.stack(loaded)
    return batch


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0..1 mask resized like the authors' test path (torchvision antialiased bilinear on floats)."""
    h, w = mask.shape
    if (h, w) == (size, size):
        return mask
    return _aa_bilinear_weights(h, size) @ mask @ _aa_bilinear_weights(w, size).T


def paired_files(data: Path | str) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a labelled folder ``data``/images + ``data``/masks, matched by stem."""
    data = Path(data)
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


def read_mask(path: Path) -> np.ndarray:
    """An expert mask as float64 in [0, 1]."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f"{path}: unreadable mask")
    return mask.astype(np.float64) / 255.0


def load_pair(image: Path, mask: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(preprocessed image (3, S, S) float32, mask (S, S) float64 in [0, 1] resized like the authors' test code)."""
    return preprocess(read_image(image), size), resize_mask(read_mask(mask), size)
