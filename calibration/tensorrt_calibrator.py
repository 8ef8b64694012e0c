"""Implicit INT8 calibration inside the TensorRT 10 builder (``IInt8EntropyCalibrator2``, deprecated since 10.1).

Only standard TensorRT 10.x offers it; TensorRT 11 and TensorRT-RTX are strongly typed and take INT8 only from a
Q/DQ ONNX (``quantize_int8``, the recommended path). The images go through the deployment preprocessing, in batches
of the engine's (optimization-profile OPT) batch size; the calibration table is cached beside the engine so a rebuild
skips calibration. Not executed in this project's CI: it needs standard TensorRT 10 and a GPU it supports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ultralbm_edge.runtime.files import write_bytes_atomic
from ultralbm_edge.runtime.backends.tensorrt_env import TensorRT, cuda_call, cuda_runtime

from .int8 import CalibrationError, calibration_images


def entropy_calibrator(trt: TensorRT, images: str | Path, cache: Path, batch: int, size: int, num_images: int = 256):
    """An ``IInt8EntropyCalibrator2`` over ``num_images`` preprocessed images of ``images``, caching to ``cache``."""
    t = trt.module
    if trt.strongly_typed_only or not hasattr(t, "IInt8EntropyCalibrator2"):
        raise CalibrationError(
            f"{trt.package} {trt.version} has no implicit INT8 calibration (strongly typed) — run "
            "`ultralbm-edge calibrate MODEL.onnx --images DIR` and build the engine from its Q/DQ ONNX"
        )
    data, _ = calibration_images(Path(images), num_images, size)
    if len(data) < batch:
        raise CalibrationError(f"{images}: {len(data)} images cannot fill one calibration batch of {batch}")
    cudart = cuda_runtime()

    class EntropyCalibrator(t.IInt8EntropyCalibrator2):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.batches = [np.ascontiguousarray(data[i : i + batch]) for i in range(0, len(data) - batch + 1, batch)]
            self.device_input = cuda_call(cudart.cudaMalloc(self.batches[0].nbytes), "calibration buffer allocation")

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if not self.batches:
                cudart.cudaFree(self.device_input)
                return None
            host = self.batches.pop(0)
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            cuda_call(cudart.cudaMemcpy(self.device_input, host.ctypes.data, host.nbytes, kind), "calibration copy")
            return [int(self.device_input)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, table) -> None:  # type: ignore[no-untyped-def]
            write_bytes_atomic(cache, bytes(table))

    return EntropyCalibrator()
