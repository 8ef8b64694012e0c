"""From model probabilities to a clinical mask: resize to the original image, threshold, drop specks, fill holes.
All OpenCV; each step can be switched off."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PostprocessOptions:
    threshold: float = 0.5
    # Defaults chosen by measurement (benchmarks/postprocessing.py, README "Post-processing"): fill holes, and drop
    # separate specks (hair, reflections) but keep every component at least a quarter of the largest one's area:
    # keeping only the largest threw away the real lesion of ISIC_0012281 (Dice 0.00).
    keep_largest: bool = True
    fill_holes: bool = True
    min_component_fraction: float = 0.25  # with keep_largest: 0 keeps the largest component only


def probability_to_mask(prob: np.ndarray, height: int, width: int, opts: PostprocessOptions) -> np.ndarray:
    """(S, S) probabilities -> (height, width) uint8 mask of 0/255.

    The probability map is resized (bilinear) before thresholding, so the mask edge is interpolated rather
    than blocky upscaled pixels.
    """
    return clean_mask((full_size(prob, height, width) >= opts.threshold).astype(np.uint8), opts)


def full_size(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """The model's (S, S) probability map resized to the image's size (bilinear, half-pixel centres)."""
    return prob if prob.shape == (height, width) else cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)


def clean_mask(mask: np.ndarray, opts: PostprocessOptions) -> np.ndarray:
    """A thresholded 0/1 mask at the image's size -> the 0/255 mask predict writes (specks dropped, holes filled)."""
    if opts.keep_largest:
        mask = large_components(mask, opts.min_component_fraction)
    if opts.fill_holes:
        mask = fill_holes(mask)
    return mask * 255


def large_components(mask: np.ndarray, min_fraction: float = 0.0) -> np.ndarray:
    """Keep the largest 8-connected foreground component of a 0/1 mask, and every other component whose area is at
    least ``min_fraction`` of the largest's (0: the largest only)."""
    # Labels alone, and the areas counted only when there are several components (6 % of the model's ISIC val masks,
    # 8 % of PH2's): OpenCV's statistics cost more than the labelling itself, on every mask. Same masks, clean_mask
    # 2.4x faster (benchmarks/mask_cleaning.py).
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    if n <= 2:  # background only, or a single component
        return mask
    areas = np.bincount(labels.ravel(), minlength=n)[1:]
    if min_fraction <= 0:
        return (labels == 1 + int(np.argmax(areas))).astype(np.uint8)
    keep = np.flatnonzero(areas >= min_fraction * areas.max()) + 1
    return np.isin(labels, keep).astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions of a 0/1 mask that do not touch the image border."""
    h, w = mask.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = mask
    cv2.floodFill(flood, None, (0, 0), 1)  # everything reachable from outside becomes 1
    holes = flood[1:-1, 1:-1] == 0
    return (mask | holes).astype(np.uint8)


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """BGR image with the mask's contour drawn on it (for OUT/overlays/<stem>.jpg)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(rgb.shape[:2]) / 256))
    cv2.drawContours(bgr, contours, -1, color[::-1], thickness)
    return bgr


def mask_stats(mask: np.ndarray, prob_full: np.ndarray | None = None) -> dict[str, float | int | str]:
    """Area, fraction and bounding box of a uint8 mask, 0/255 (and the mean probability inside it)."""
    # OpenCV counts and bounds the non-zero pixels in place: half the time of numpy's boolean mask, per image written.
    area = cv2.countNonZero(mask)
    stats: dict[str, float | int | str] = {"lesion_area_px": area, "lesion_fraction": round(area / mask.size, 6)}
    if area:
        x, y, w, h = cv2.boundingRect(mask)
        stats["bbox_xywh"] = f"{x} {y} {w} {h}"
    else:
        stats["bbox_xywh"] = ""
    if prob_full is not None:
        stats["mean_prob_in_lesion"] = round(float(prob_full[mask > 0].mean()), 6) if area else ""
    return stats
