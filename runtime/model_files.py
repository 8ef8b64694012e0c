"""Model names -> model files: a bundled name (``ultralbm``, ``ultralbm-t``) or a path the user gives.

Each bundled model ships twice: the training checkpoint (``<name>.pth``) and its exact, portable ONNX export
(``<name>.onnx``). A bundled name opens the fastest form this machine can run: the checkpoint through PyTorch's
CUDA-graph runner when PyTorch and an NVIDIA GPU are present, else the ONNX file (no torch needed). Naming a
backend (``--backend torch``) picks the form that backend runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ultralbm_edge.assets import WEIGHTS_DIR

from .errors import UserError

# The bundled forms, fastest first where each can run.
_FORM_FOR_BACKEND = {"torch": ".pth", "onnxruntime": ".onnx"}


class ModelNotFound(UserError, FileNotFoundError):
    """A model name or path that resolves to nothing; the message lists what is available."""


def bundled_models() -> dict[str, dict[str, Path]]:
    """Bundled model names -> {suffix: file} of the forms actually shipped in this installation."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(WEIGHTS_DIR.glob("*")):
        if path.suffix in (".pth", ".onnx"):
            found.setdefault(path.stem, {})[path.suffix] = path
    return found


def _gpu_torch_available() -> bool:
    """PyTorch installed and an NVIDIA device present, checked without importing torch (seconds, and a device
    install has none): then the checkpoint on the CUDA-graph runner is the fast path."""
    return importlib.util.find_spec("torch") is not None and Path("/dev/nvidiactl").exists()


def resolve_model(name_or_path: str | Path, backend: str = "auto") -> Path:
    """A bundled name or an existing file path -> the file's path (see the module docstring for bundled names)."""
    text = str(name_or_path)
    shipped = bundled_models()
    if text in shipped:
        forms = shipped[text]
        wanted = _FORM_FOR_BACKEND.get(backend) or (".pth" if _gpu_torch_available() else ".onnx")
        return forms.get(wanted) or next(iter(forms.values()))
    path = Path(text)
    if not path.is_file():
        raise ModelNotFound(
            f"{path}: model file not found — pass a .pth/.onnx/.engine file or a bundled name ({', '.join(shipped)})"
        )
    return path
