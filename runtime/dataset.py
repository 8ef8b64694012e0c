"""Folders of images, labelled and not: one loader for evaluation, training, calibration, parity and benchmarks.

A labelled folder holds ``images/`` and ``masks/`` (0 = skin, 255 = lesion), paired by file stem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .errors import UserError
from .imageio import DEFAULT_LIMITS, ImageLimits, ImageReadError, find_images, read_image
from .preprocess import _aa_bilinear_weights, preprocess


class DatasetError(UserError, ValueError):
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


def _pair_key(path: Path, folder: Path) -> str:
    """Images and masks pair by path relative to images/ and masks/ without the suffix; ISIC's ``_segmentation``
    mask names pair too."""
    rel = path.relative_to(folder).with_suffix("").as_posix()
    return rel[: -len("_segmentation")] if rel.endswith("_segmentation") else rel


def paired_files(data: Path | str) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a labelled folder ``data``/images + ``data``/masks, matched by relative path and stem
    (``images/a/x.jpg`` <-> ``masks/a/x.png``: same-named files in different sub-folders are different cases)."""
    data = Path(data)
    images, masks = data / "images", data / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise DatasetError(f"{data}: expected sub-folders images/ and masks/ (masks: 0 = skin, 255 = lesion)")
    by_key: dict[str, Path] = {}
    for m in find_images([masks]):
        key = _pair_key(m, masks)
        if key in by_key:
            raise DatasetError(f"{data}: two masks for one image: {by_key[key].name} and {m.name} — keep one")
        by_key[key] = m
    pairs, unmatched = [], []
    for img in find_images([images]):
        mask = by_key.get(_pair_key(img, images))
        (pairs if mask is not None else unmatched).append((img, mask))
    if unmatched:
        first = unmatched[0][0].relative_to(images)
        raise DatasetError(f"{data}: {len(unmatched)} images have no mask at the same relative path, e.g. {first} (expected masks/{first.with_suffix('.png')})")
    if not pairs:
        raise DatasetError(f"{data}/images: no images found")
    return pairs  # type: ignore[return-value]


def read_mask(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """An expert mask as float64 in [0, 1]: 8-bit masks of 0/255 (or grey levels), and masks stored as 0/1."""
    rgb = read_image(path, limits)
    mask = rgb[..., 0] if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all() else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return mask.astype(np.float64) / (1.0 if mask.max() <= 1 else 255.0)


@dataclass
class LabelledImage:
    x: np.ndarray  # preprocessed image (3, S, S) float32
    truth: np.ndarray  # expert mask (S, S) float64 in [0, 1], resized like the authors' test code
    truth_full: np.ndarray  # expert mask at the image's own size, float64 in [0, 1]


def load_pair(image: Path, mask: Path, size: int, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray]:
    """(preprocessed image, mask at the model's size): what training and the paper's metrics use."""
    case = load_labelled(image, mask, size, limits)
    return case.x, case.truth


def load_labelled(image: Path, mask: Path, size: int, limits: ImageLimits = DEFAULT_LIMITS) -> LabelledImage:
    """An image and its expert mask, checked to belong together (same size)."""
    rgb = read_image(image, limits)
    try:
        truth = read_mask(mask, limits)
    except ImageReadError as e:
        raise DatasetError(f"{mask}: unreadable mask ({e.problem})") from None
    if truth.shape != rgb.shape[:2]:
        raise DatasetError(
            f"{mask}: the mask is {truth.shape[1]}x{truth.shape[0]} but its image {image.name} is "
            f"{rgb.shape[1]}x{rgb.shape[0]} — masks must have their image's size"
        )
    return LabelledImage(preprocess(rgb, size), resize_mask(truth, size), truth)
