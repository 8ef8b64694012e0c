"""Inference backends behind one small interface.

A backend takes an (N, 3, H, W) float32 batch, already preprocessed, and returns (N, 1, H, W) float32
probabilities. Which backend opens a model is decided by the file (``.onnx`` -> onnxruntime, ``.engine``/``.plan``
-> tensorrt, ``.pth`` -> torch, dev only) unless one is named.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..metadata import ModelMetadata


class BackendError(RuntimeError):
    """A model could not be opened or run; the message says which file and what to do."""


class Backend(Protocol):
    name: str
    metadata: ModelMetadata
    # The batch sizes the model accepts: None for any, else the fixed/profiled maximum.
    max_batch: int | None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 in [0, 255] -> (N, 1, H, W) float32 probabilities."""
        ...

    def describe(self) -> dict[str, str]:
        """Device, library versions and execution provider, for benchmark reports."""
        ...
