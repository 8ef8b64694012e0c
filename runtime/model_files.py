"""Model names -> model files: a bundled name (``ultralbm``, ``ultralbm-t``) or a path the user gives."""

from __future__ import annotations

from pathlib import Path
from ultralbm_edge.assets import WEIGHTS_DIR

from .errors import UserError


class ModelNotFound(UserError, FileNotFoundError):
    """A model name or path that resolves to nothing; the message lists what is available."""


def bundled_models() -> dict[str, Path]:
    """Bundled model names -> checkpoint files actually shipped in this installation."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.pth"))}


def resolve_model(name_or_path: str | Path) -> Path:
    """A bundled name or an existing file path -> the file's path."""
    text = str(name_or_path)
    shipped = bundled_models()
    if text in shipped:
        return shipped[text]
    path = Path(text)
    if not path.is_file():
        raise ModelNotFound(
            f"{path}: model file not found — pass a .pth/.onnx/.engine file or a bundled name ({', '.join(shipped)})"
        )
    return path

