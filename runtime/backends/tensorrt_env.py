"""Which TensorRT is installed, and the CUDA it runs on: the one place the runner, the engine builder and the
calibrator ask (as Polygraphy's ``mod/trt_importer`` does).

Standard TensorRT (Jetson, data centre) and TensorRT-RTX (RTX PCs) expose the same builder/runtime API under
different import names; cuda-python supplies device buffers and the GPU query. Torch-free.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .base import BackendError
from ..metadata import MetadataError, ModelMetadata

# Import names, best first: standard TensorRT, then TensorRT-RTX.
PACKAGES = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt_rtx_bindings"}
# TensorRT-RTX's runtime does not run on these compute capabilities (Hopper data-centre GPUs).
RTX_UNSUPPORTED_SM = {(9, 0)}


class TensorRTError(BackendError):
    """TensorRT is missing, rejected the model, or cannot build/run what was asked; the message says what to do."""


@dataclass
class TensorRT:
    module: ModuleType
    package: str  # "tensorrt" or "tensorrt_rtx"
    version: str

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT-RTX and TensorRT >= 11 have no FP16/INT8 builder flags: types come from the network."""
        return self.package == "tensorrt_rtx" or int(self.version.split(".")[0]) >= 11


def load_tensorrt(package: str = "auto") -> TensorRT:
    """Import ``tensorrt`` or TensorRT-RTX (``auto``: whichever is installed, standard TensorRT first)."""
    if package not in ("auto", *PACKAGES):
        raise TensorRTError(f"unknown TensorRT package {package!r}; choose auto, {', '.join(PACKAGES)}")
    errors = []
    for name in list(PACKAGES) if package == "auto" else [package]:
        try:
            module = importlib.import_module(PACKAGES[name])
        except ImportError as e:
            errors.append(f"{PACKAGES[name]}: {e}")
            continue
        return TensorRT(module, name, str(module.__version__))
    raise TensorRTError(
        "no TensorRT is installed (" + "; ".join(errors) + ") — install TensorRT for your device (Jetson: JetPack's "
        "tensorrt; RTX PCs: pip install 'ultralbm-edge[rtx]'), or use the ONNX model with ONNX Runtime"
    )


def sidecar_path(engine: Path) -> Path:
    """The engine's JSON sidecar (metadata, TensorRT version, targets, hashes)."""
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: Path) -> tuple[dict, ModelMetadata]:
    """The engine's sidecar and the model metadata in it."""
    side = sidecar_path(engine)
    if not side.is_file():
        raise TensorRTError(f"{engine}: no sidecar {side.name} — rebuild with `ultralbm-edge build-engine` (it writes one)")
    try:
        sidecar = json.loads(side.read_text())
        return sidecar, ModelMetadata.from_json(sidecar["metadata"], source=str(side))
    except (json.JSONDecodeError, KeyError, TypeError, MetadataError) as e:
        raise TensorRTError(f"{side}: unreadable engine sidecar ({e}) — rebuild the engine") from None


def cuda_runtime():
    """cuda-python's runtime API module (its import path moved in cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]  # cuda-python < 12.6
        except ImportError:
            raise TensorRTError("running engines needs cuda-python — pip install 'ultralbm-edge[tensorrt]'") from None
    return cudart


def cuda_call(result, what: str):
    """Unpack a cuda-python ``(error, value...)`` result, raising a TensorRTError that names ``what`` failed."""
    err, *rest = result
    if int(err) != 0:
        raise TensorRTError(f"CUDA error during {what}: {err}")
    return rest[0] if len(rest) == 1 else rest


def current_gpu() -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of CUDA device 0."""
    cudart = cuda_runtime()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise TensorRTError("no CUDA GPU is visible — run engines on the device they were built for, or use the ONNX model")
    prop = cuda_call(cudart.cudaGetDeviceProperties(0), "device query")
    name = prop.name.decode(errors="replace").strip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, (prop.major, prop.minor)


def gpu_description() -> str:
    """The GPU an engine is built on, when there is one (TensorRT-RTX also builds without)."""
    try:
        name, (major, minor) = current_gpu()
    except TensorRTError as e:
        return f"none ({e})"
    return f"{name} (sm_{major}{minor})"
