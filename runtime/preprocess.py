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


@lru_cache(maxsize=64)
def _aa_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same filter as sparse taps: first input index per output (out,) and weights (out, K).

    K (the widest row, ~2x the scale factor + 2) multiply-adds per output replace an in_size-long dot product.
    """
    dense = _aa_bilinear_weights(in_size, out_size)
    nz = dense != 0
    width = int(nz.sum(axis=1).max())
    first = np.minimum(nz.argmax(axis=1), in_size - width)
    weights = np.take_along_axis(dense, first[:, None] + np.arange(width)[None, :], axis=1)
    return first, weights


def preprocess(rgb: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 model input with values in [0, 255].

    Float64 throughout, like the authors' float64 tensor; the separable filter runs along the height first on
    whole rows (contiguous), converting only the rows each tap needs, so an 8000x6000 photo never needs a
    1 GB float64 copy.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {rgb.shape}")
    h, w, _ = rgb.shape
    if (h, w) == (size, size):
        return minmax_scale(rgb).transpose(2, 0, 1).astype(np.float32)
    lo, hi = float(rgb.min()), float(rgb.max())
    span = (hi - lo) if hi != lo else np.inf  # a constant image maps to zeros
    # Min-max scaling folded into the taps: sum_k w_k (x_k - lo) 255 / span = sum_k x_k (255 w_k / span) - 255 lo / span,
    # because every row of weights sums to 1. Equal to scaling first up to float64 rounding (~1e-13).
    first, wy = _aa_taps(h, size)
    wy = wy * (255.0 / span)
    rows = np.zeros((size, w, 3), dtype=np.float64)
    tap = np.empty_like(rows)
    for k in range(wy.shape[1]):
        np.multiply(rgb[first + k], wy[:, k, None, None], out=tap)
        rows += tap
    rows -= 255.0 * lo / span
    first, wx = _aa_taps(w, size)
    out = np.zeros((size, size, 3), dtype=np.float64)
    for k in range(wx.shape[1]):
        out += rows[:, first + k] * wx[None, :, k, None]
    return out.transpose(2, 0, 1).astype(np.float32)
