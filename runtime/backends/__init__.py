"""Inference backends behind one small interface.

A backend takes an (N, 3, H, W) float32 batch, already preprocessed, and returns (N, 1, H, W) float32
probabilities. Which backend opens a model is decided by the file (``.onnx`` -> onnxruntime, ``.engine``/``.plan``
-> tensorrt, ``.pth`` -> torch, dev only) unless one is named.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np

from ..metadata import ModelMetadata
from ..models import resolve_model

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
_BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".pth": "torch", ".pt": "torch"}


class BackendError(RuntimeError):
    """A model could not be opened or run; the message says which file and what to do."""


class Backend(Protocol):
    name: str
    metadata: ModelMetadata
    # The batch sizes the model accepts: None for any, else the fixed batch it was built for.
    max_batch: int | None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 in [0, 255] -> (N, 1, H, W) float32 probabilities."""
        ...

    def describe(self) -> dict[str, str]:
        """Device, library versions and execution provider, for benchmark reports."""
        ...


def backend_for(path: Path, backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    try:
        return _BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise BackendError(f"{path}: cannot tell the backend from the suffix {path.suffix!r} — use .onnx, .engine or .pth, or --backend") from None


def open_backend(model: str | Path, backend: str = "auto", threads: int | None = None, device: str | None = None) -> Backend:
    """Open ``model`` (a file or a bundled name) with the backend its suffix implies, or the one named."""
    path = resolve_model(model)
    kind = backend_for(path, backend)
    if kind == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, threads=threads, device=device)
    if kind == "tensorrt":
        try:
            module = importlib.import_module("ultralbm_edge.runtime.backends.tensorrt_backend")
        except ImportError as e:
            raise BackendError(f"{path}: the TensorRT backend is unavailable ({e})") from None
        return module.TensorRTBackend(path)
    # The PyTorch backend lives outside runtime/ (which never imports torch); it is for development.
    try:
        module = importlib.import_module("ultralbm_edge.torch_backend")
    except ImportError as e:
        raise BackendError(f"{path}: .pth models need PyTorch — pip install 'ultralbm-edge[torch]', or export to ONNX first ({e})") from None
    return module.TorchBackend(path, threads=threads, device=device)
