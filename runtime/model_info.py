"""What a deployed model file says about itself, read without running it (``ultralbm-edge info``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .files import file_sha256
from .metadata import read_onnx_metadata
from .backends.tensorrt_env import read_sidecar


def deployed_model_info(path: Path) -> dict[str, Any]:
    """What an ONNX file or a TensorRT engine says about itself (metadata, hashes; for engines the sidecar's build
    facts), without loading it into a runtime. Checkpoints (.pth) are described by ``checkpoint.load_checkpoint``."""
    info: dict[str, Any] = {"file": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
    if path.suffix.lower() == ".onnx":
        meta = read_onnx_metadata(path)
    else:
        sidecar, meta = read_sidecar(path)
        info.update({k: sidecar[k] for k in ("tensorrt_package", "tensorrt_version", "batch", "compute_capabilities", "engine_sha256") if k in sidecar})
    info.update(meta.to_json())
    return info
