"""Inference backends behind one small interface (``base.Backend``), opened by the format table.

Which backend opens a model is decided by its file suffix (``runtime.formats``) unless one is named.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..formats import UnknownFormat, format_for, format_named
from ..model_files import resolve_model
from .base import Backend, BackendError

__all__ = ["Backend", "BackendError", "open_backend"]


def open_backend(
    model: str | Path, backend: str = "auto", threads: int | None = None, device: str | None = None, compile: bool = False
) -> Backend:
    """Open ``model`` (a file or a bundled name) with the backend its suffix implies, or the one named. ``compile``
    (PyTorch checkpoints on a CUDA GPU) runs the model through torch.compile inside its CUDA graphs."""
    path = resolve_model(model, backend)
    try:
        fmt = format_for(path) if backend == "auto" else format_named(backend)
    except UnknownFormat as e:
        raise BackendError(str(e)) from None
    module_name, class_name = fmt.backend.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendError(f"{path}: the {fmt.name} backend needs a package that is not installed ({e}) — {fmt.install}") from None
    if compile and fmt.name != "torch":
        raise BackendError(f"{path}: --compile applies to PyTorch checkpoints (.pth) on a CUDA GPU, not to {fmt.name} models")
    extra = {"compile": True} if compile else {}
    backend = getattr(module, class_name)(path, threads=threads, device=device, **extra)
    backend.check_output_contract()
    return backend
