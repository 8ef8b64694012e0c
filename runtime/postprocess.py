"""From model probabilities to a clinical mask: threshold, resize to the original image, keep the largest lesion,
fill holes. All OpenCV; each step can be switched off."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PostprocessOptions:
    threshold: float = 0.5
    keep_largest: bool = True
    fill_holes: bool = True


def probability_to_mask(prob: np.ndarray, height: int, width: int, opts: PostprocessOptions) -> np.ndarray:
    """(S, S) probabilities -> (height, width) uint8 mask of 0/255.

    The probability map is resized (bilinear) before thresholding, so the mask edge is interpolated rather
    than blocky upscaled pixels.
    """
    if prob.shape != (height, width):
        prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    mask = (prob >= opts.threshold).astype(np.uint8)
    if opts.keep_largest:
        mask = largest_component(mask)
    if opts.fill_holes:
        mask = fill_holes(mask)
    return mask * 255


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest 8-connected foreground component of a 0/1 mask."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:  # background only, or a single component
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == largest).astype(np.uint8)


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
    """Area, fraction and bounding box of a 0/255 mask (and the mean probability inside it)."""
    fg = mask > 0
    area = int(fg.sum())
    stats: dict[str, float | int | str] = {"lesion_area_px": area, "lesion_fraction": round(area / fg.size, 6)}
    if area:
        x, y, w, h = cv2.boundingRect(fg.astype(np.uint8))
        stats["bbox_xywh"] = f"{x} {y} {w} {h}"
    else:
        stats["bbox_xywh"] = ""
    if prob_full is not None:
        stats["mean_prob_in_lesion"] = round(float(prob_full[fg].mean()), 6) if area else ""
    return stats
