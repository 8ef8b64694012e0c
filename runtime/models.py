"""Model names -> files. ``ultralbm`` and ``ultralbm-t`` name the checkpoints bundled with the package."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"
if not BUNDLED_DIR.is_dir():  # editable install: ultralbm_edge/weights beside the mapped runtime/ folder
    import ultralbm_edge

    BUNDLED_DIR = Path(ultralbm_edge.__file__).resolve().parent / "weights"
BUNDLED_NAMES = ("ultralbm", "ultralbm-t")
DEFAULT_MODEL = "ultralbm"


class ModelNotFound(FileNotFoundError):
    """A model name or path that resolves to nothing; the message lists what is available."""


def bundled_models() -> dict[str, Path]:
    """Bundled model names that are actually shipped in this installation."""
    return {n: BUNDLED_DIR / f"{n}.pth" for n in BUNDLED_NAMES if (BUNDLED_DIR / f"{n}.pth").is_file()}


def resolve_model(name_or_path: str | Path) -> Path:
    """A bundled name (``ultralbm``, ``ultralbm-t``) or an existing file path -> the file's path."""
    text = str(name_or_path)
    if text in BUNDLED_NAMES:
        shipped = bundled_models()
        if text not in shipped:
            raise ModelNotFound(f"bundled model {text!r} is not shipped in this installation (available: {sorted(shipped)})")
        return shipped[text]
    path = Path(text)
    if not path.is_file():
        raise ModelNotFound(
            f"{path}: model file not found — pass a .pth/.onnx/.engine file or a bundled name ({', '.join(BUNDLED_NAMES)})"
        )
    return path
