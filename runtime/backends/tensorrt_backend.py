"""TensorRT engine backend (standard TensorRT or TensorRT-RTX), with cuda-python device buffers.

An engine only runs with the TensorRT version that built it, on a GPU it was built for. The JSON sidecar written by
``ultralbm-edge build-engine`` records both, and is checked before deserializing, so a mismatch is a clear message
("built with X for Y; this machine has Z") rather than a crash inside TensorRT.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from ..metadata import MetadataError, ModelMetadata
from . import BackendError

# Import names, best first: standard TensorRT (Jetson, data centre), then TensorRT-RTX (RTX PCs).
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
    return engine.with_name(engine.name + ".json")


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
    cudart = cuda_runtime()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise TensorRTError("no CUDA GPU is visible — run engines on the device they were built for, or use the ONNX model")
    prop = cuda_call(cudart.cudaGetDeviceProperties(0), "device query")
    name = prop.name.decode(errors="replace").strip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, (prop.major, prop.minor)


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: Path, package: str | None = None) -> None:
        self.path = Path(path)
        side_file = sidecar_path(self.path)
        if not side_file.is_file():
            raise TensorRTError(f"{self.path}: no sidecar {side_file.name} — rebuild with `ultralbm-edge build-engine` (it writes one)")
        try:
            self.sidecar = json.loads(side_file.read_text())
            self.metadata = ModelMetadata.from_json(self.sidecar["metadata"], source=str(side_file))
        except (json.JSONDecodeError, KeyError, MetadataError) as e:
            raise TensorRTError(f"{side_file}: unreadable engine sidecar ({e}) — rebuild the engine") from None
        built = f"{self.sidecar['tensorrt_package']} {self.sidecar['tensorrt_version']}"
        try:
            self.trt = load_tensorrt(package or self.sidecar["tensorrt_package"])
        except TensorRTError:
            raise TensorRTError(f"{self.path}: built with {built}; this machine has no {self.sidecar['tensorrt_package']} — install that version or rebuild") from None
        if self.trt.version != self.sidecar["tensorrt_version"]:
            raise TensorRTError(
                f"{self.path}: built with {built}; this machine has {self.trt.package} {self.trt.version} — "
                "rebuild the engine here with `ultralbm-edge build-engine`"
            )
        try:
            gpu, sm = current_gpu()
        except TensorRTError as e:
            raise TensorRTError(f"{self.path}: {e}") from None
        if self.trt.package == "tensorrt_rtx" and sm in RTX_UNSUPPORTED_SM:
            raise TensorRTError(
                f"{self.path}: built with {built}, whose runtime does not support sm_{sm[0]}{sm[1]}; this machine has {gpu} — "
                "use standard TensorRT or ONNX Runtime on this GPU"
            )
        targets = self.sidecar.get("compute_capabilities")
        if isinstance(targets, list) and targets and f"SM{sm[0]}{sm[1]}" not in targets:
            raise TensorRTError(f"{self.path}: built with {built} for {', '.join(targets)}; this machine has {gpu} (sm_{sm[0]}{sm[1]}) — rebuild")
        self.gpu = gpu
        t = self.trt.module
        self._logger = t.Logger(t.Logger.WARNING)
        self.engine = t.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise TensorRTError(f"{self.path}: TensorRT could not deserialize the engine (corrupt or built for another GPU)")
        self.context = self.engine.create_execution_context()
        batch = self.sidecar.get("batch", {})
        self.max_batch: int | None = batch.get("fixed") or batch.get("max")
        self._cudart = cuda_runtime()
        self._stream = cuda_call(self._cudart.cudaStreamCreate(), "stream creation")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._cudart.cudaFree(ptr)
            ptr = cuda_call(self._cudart.cudaMalloc(nbytes), "allocation")
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.max_batch and len(batch) > self.max_batch:
            return np.concatenate([self.run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)])
        cudart, kind = self._cudart, self._cudart.cudaMemcpyKind
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.sidecar["batch"].get("fixed") and len(x) < self.max_batch:  # pad a fixed-batch engine
            x = np.concatenate([x, np.repeat(x[-1:], self.max_batch - len(x), axis=0)])
        self.context.set_input_shape("image", x.shape)
        out = np.empty((len(x), 1, *x.shape[2:]), dtype=np.float32)
        d_in, d_out = self._device_buffer("image", x.nbytes), self._device_buffer("prob", out.nbytes)
        self.context.set_tensor_address("image", d_in)
        self.context.set_tensor_address("prob", d_out)
        cuda_call(cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice, self._stream), "copy in")
        if not self.context.execute_async_v3(self._stream):
            raise TensorRTError(f"{self.path}: TensorRT execution failed")
        cuda_call(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, kind.cudaMemcpyDeviceToHost, self._stream), "copy out")
        cuda_call(cudart.cudaStreamSynchronize(self._stream), "synchronize")
        return out[: len(batch)]

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, self.trt.package: self.trt.version, "device": self.gpu, "precision": self.sidecar["precision"]}
