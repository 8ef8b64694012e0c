"""Test-time augmentation by flip averaging, as nnU-Net's mirroring: every image is segmented four times (as it is,
mirrored left-right, upside down, and both), each probability map is flipped back, and the four are averaged before
any threshold.

It wraps any backend (``with_flip_tta``): the flips are of the preprocessed (N, 3, S, S) batch, so ONNX Runtime,
TensorRT engines built for a fixed batch and PyTorch checkpoints all take it unchanged (``Backend.run`` already pads
and slices batches to what the model accepts). Numpy only: it runs where the runtime runs.

Cost: four inferences per image. Off by default: on the bundled models it gains +0.14 / +0.09 DSC on isic2017/val
and -0.15 / +0.25 on PH2 (``benchmarks/tta_threshold.py``, the model card), below the project's rule for turning it
on (>= 0.3 DSC at <= 4x compute).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .backends.base import Backend

# Axes of an (N, C, H, W) array to mirror: identity, horizontal (left-right), vertical (upside down), both.
FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
FLIP_TTA = "flip4"  # how a run's settings and reports name it


def _mirror(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(x, axes) if axes else x


def flip_average(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """Mean of ``run``'s (N, 1, S, S) probabilities over the four mirror images of the (N, 3, S, S) ``batch``, each
    flipped back to the original orientation. The four versions go to ``run`` as one batch of 4N, so a backend
    that batches well pays for one call."""
    n = len(batch)
    stacked = np.ascontiguousarray(np.concatenate([_mirror(batch, axes) for axes in FLIPS]), dtype=np.float32)
    probs = run(stacked)
    # Accumulate in float64, then return float32 like every backend: the order of the sum does not change the result.
    total = np.zeros(probs[:n].shape, dtype=np.float64)
    for i, axes in enumerate(FLIPS):
        total += _mirror(probs[i * n : (i + 1) * n], axes)
    return (total / len(FLIPS)).astype(np.float32)


class FlipTTA(Backend):
    """``backend`` with flip averaging: the same model file, metadata and device; ``run`` returns the averaged
    probabilities. Folder prediction takes its general (CPU-side batching) path, since the GPU batch stages of a
    backend run the model directly."""

    def __init__(self, backend: Backend) -> None:
        self.inner = backend
        self.name = f"{backend.name} + flip TTA"  # type: ignore[misc]  # an instance's own label, not the class's
        self.path = backend.path
        self.metadata = backend.metadata
        self.test_time_augmentation = FLIP_TTA

    def run(self, batch: np.ndarray) -> np.ndarray:
        return flip_average(self.inner.run, np.asarray(batch, dtype=np.float32))

    def describe(self) -> dict[str, str]:
        return {**self.inner.describe(), "test_time_augmentation": FLIP_TTA}


def with_flip_tta(backend: Backend, enabled: bool = True) -> Backend:
    """``backend`` wrapped in flip averaging when ``enabled`` (the CLI's ``--tta``), else ``backend`` itself."""
    return FlipTTA(backend) if enabled else backend
