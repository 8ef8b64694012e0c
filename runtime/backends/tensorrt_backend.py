"""TensorRT engine backend (standard TensorRT or TensorRT-RTX), with cuda-python device buffers.

An engine only runs with the TensorRT version that built it, on a GPU it was built for. The JSON sidecar written by
``ultralbm-edge build-engine`` records both, and is checked before deserializing, so a mismatch is a clear message
("built with X for Y; this machine has Z") rather than a crash inside TensorRT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import file_sha256
from ..formats import INPUT_NAME, OUTPUT_NAME
from ..verbosity import verbose
from .tensorrt_env import RTX_UNSUPPORTED_SM, TensorRTError, cuda_call, cuda_runtime, current_gpu, load_tensorrt, read_sidecar
from .base import Backend


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None, package: str | None = None) -> None:
        # threads and device: the open_backend signature; an engine runs on the GPU it was built for.
        self.path = Path(path)
        self.sidecar, self.metadata = read_sidecar(self.path)
        if file_sha256(self.path) != self.sidecar.get("engine_sha256"):
            raise TensorRTError(
                f"{self.path}: does not match its sidecar {self.path.name}.json (sha256 differs: a different or damaged "
                "engine) — rebuild it with `ultralbm-edge build-engine`"
            )
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
        self._logger = t.Logger(t.Logger.INFO if verbose() else t.Logger.ERROR)
        self.engine = t.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise TensorRTError(f"{self.path}: TensorRT could not deserialize the engine (corrupt or built for another GPU)")
        self.context = self.engine.create_execution_context()
        batch = self.sidecar.get("batch", {})
        self.max_batch = batch.get("fixed") or batch.get("max")
        self.fixed_batch = bool(batch.get("fixed"))
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

    def _infer(self, x: np.ndarray) -> np.ndarray:
        cudart, kind = self._cudart, self._cudart.cudaMemcpyKind
        self.context.set_input_shape(INPUT_NAME, x.shape)
        out = np.empty((len(x), 1, *x.shape[2:]), dtype=np.float32)
        d_in, d_out = self._device_buffer(INPUT_NAME, x.nbytes), self._device_buffer(OUTPUT_NAME, out.nbytes)
        self.context.set_tensor_address(INPUT_NAME, d_in)
        self.context.set_tensor_address(OUTPUT_NAME, d_out)
        cuda_call(cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice, self._stream), "copy in")
        if not self.context.execute_async_v3(self._stream):
            raise TensorRTError(f"{self.path}: TensorRT execution failed")
        cuda_call(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, kind.cudaMemcpyDeviceToHost, self._stream), "copy out")
        cuda_call(cudart.cudaStreamSynchronize(self._stream), "synchronize")
        return out

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, self.trt.package: self.trt.version, "device": self.gpu, "precision": self.sidecar["precision"]}
