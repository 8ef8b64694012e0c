"""Preprocessing identical to the authors' test path, without torch.

Their pipeline (``myNormalize`` -> ``myToTensor`` -> ``myResize``) is: RGB uint8 -> per-image min-max over all
channels to [0, 255] in float64 (their dataset mean/std cancel out) -> CHW -> torchvision's antialiased bilinear
resize to 256x256 (computed in float64, because the tensor is float64) -> float32. Training, evaluation, export
checks and deployment all call :func:`preprocess`, so train/deploy skew cannot creep in.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

IMAGE_SIZE = 256
# Recorded in model files so that a runtime can refuse a model that expects something else.
PREPROCESSING_ID = "minmax255-rgb-aa-bilinear-v1"


@lru_cache(maxsize=64)
def _aa_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) resampling matrix of PyTorch's ``_upsample_bilinear2d_aa`` (a port of PIL's).

    Downscaling widens the triangle filter by the scale factor (antialiasing); upscaling is plain
    half-pixel bilinear. Rows are normalised over the taps that fall inside the image.
    """
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        taps = np.arange(xmin, xmax)
        w = np.clip(1.0 - np.abs((taps - center + 0.5) * invscale), 0.0, None)
        total = w.sum()
        weights[i, xmin:xmax] = w / total if total != 0 else w
    weights.setflags(write=False)
    return weights


def minmax_scale(rgb: np.ndarray) -> np.ndarray:
    """Per-image min-max over all channels to [0, 255] (float64). A constant image maps to zeros
    (the authors' code would divide by zero and produce NaN)."""
    img = rgb.astype(np.float64)
    lo, hi = img.min(), img.max()
    if hi == lo:
        return np.zeros_like(img)
    return (img - lo) / (hi - lo) * 255.0


# Rows converted to float64 at a time, so an 8000x6000 photo never needs a 1 GB float64 copy.
_STRIPE_ROWS = 512


def preprocess(rgb: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 model input with values in [0, 255]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {rgb.shape}")
    h, w, _ = rgb.shape
    if (h, w) == (size, size):
        return minmax_scale(rgb).transpose(2, 0, 1).astype(np.float32)
    lo, hi = float(rgb.min()), float(rgb.max())
    span = (hi - lo) if hi != lo else np.inf  # a constant image maps to zeros
    wx = _aa_bilinear_weights(w, size)
    # Separable resize: along the width stripe by stripe (min-max scaling applied per element first,
    # exactly as the authors' full-image float64 version), then along the height.
    rows = np.empty((3, h, size), dtype=np.float64)
    for r0 in range(0, h, _STRIPE_ROWS):
        stripe = (rgb[r0 : r0 + _STRIPE_ROWS].astype(np.float64) - lo) / span * 255.0
        rows[:, r0 : r0 + _STRIPE_ROWS] = np.ascontiguousarray(stripe.transpose(2, 0, 1)) @ wx.T
    wy = _aa_bilinear_weights(h, size)
    return (wy @ rows).astype(np.float32)


def preprocess_batch(images: list[np.ndarray], size: int = IMAGE_SIZE) -> np.ndarray:
    """Stack :func:`preprocess` over a list of RGB images into an (N, 3, size, size) float32 batch."""
    return np.stack([preprocess(im, size) for im in images])
