"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers when installed and asked for."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..formats import INPUT_NAME, OUTPUT_NAME
from ..metadata import MetadataError, ModelMetadata
from ..verbosity import ort_log_severity
from .base import Backend, BackendError, parse_device

# Execution providers tried for device="cuda", best first; CPU is always the fallback.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None) -> None:
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = ort_log_severity()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers: list = ["CPUExecutionProvider"]
        kind, index = parse_device(device)
        if kind == "cuda":
            gpu = [p for p in GPU_PROVIDERS if p in available]
            if not gpu:
                raise BackendError(
                    f"{self.path}: device {device} asked for, but this onnxruntime has only {available} — "
                    "install onnxruntime-gpu or use --device cpu"
                )
            providers = [(p, {"device_id": index}) for p in gpu] + providers
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types (InvalidGraph, NoSuchFile, ...)
            if "LinearAttention" in str(e):  # the default ONNX Runtime scan form needs onnxruntime >= 1.25
                raise BackendError(
                    f"{self.path}: its scan uses ONNX Runtime's LinearAttention op, which onnxruntime {ort.__version__} "
                    "lacks (it needs >= 1.25) — upgrade onnxruntime, or re-export for older runtimes with "
                    "`ultralbm-edge export CHECKPOINT --scan blelloch`"
                ) from None
            raise BackendError(f"{self.path}: ONNX Runtime cannot load this model ({type(e).__name__}: {e})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.metadata = ModelMetadata.from_props(props, source=str(self.path))
        except MetadataError as e:
            raise BackendError(str(e)) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        size = self.metadata.image_size
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or list(inputs[0].shape[1:]) != [3, size, size]:
            shapes = [(i.name, i.shape) for i in inputs]
            raise BackendError(
                f"{self.path}: expected one input {INPUT_NAME!r} of shape [N, 3, {size}, {size}], the model has {shapes} — "
                "re-export it with `ultralbm-edge export`"
            )
        if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME or list(outputs[0].shape[1:]) != [1, size, size]:
            shapes = [(o.name, o.shape) for o in outputs]
            raise BackendError(f"{self.path}: expected one output {OUTPUT_NAME!r} of shape [N, 1, {size}, {size}], the model has {shapes}")
        batch_dim = inputs[0].shape[0]
        if isinstance(batch_dim, int):
            self.max_batch, self.fixed_batch = batch_dim, True

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "onnxruntime": ort.__version__,
            "providers": ",".join(self.session.get_providers()),
            "device": platform.processor() or platform.machine(),
            "threads": str(self.session.get_session_options().intra_op_num_threads or "default"),
        }
