"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers when installed and asked for."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..metadata import MetadataError, ModelMetadata
from . import BackendError

# Execution providers tried for device="cuda", best first; CPU is always the fallback.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None) -> None:
        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            gpu = [p for p in GPU_PROVIDERS if p in available]
            if not gpu:
                raise BackendError(
                    f"{self.path}: device cuda asked for, but this onnxruntime has only {available} — "
                    "install onnxruntime-gpu or use --device cpu"
                )
            providers = gpu + providers
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
        if len(inputs) != 1 or inputs[0].name != "image" or [d for d in inputs[0].shape[1:]] != [3, size, size]:
            shapes = [(i.name, i.shape) for i in inputs]
            raise BackendError(
                f"{self.path}: expected one input 'image' of shape [N, 3, {size}, {size}], the model has {shapes} — "
                "re-export it with `ultralbm-edge export`"
            )
        if outputs[0].name != "prob":
            raise BackendError(f"{self.path}: expected output 'prob', the model has {[o.name for o in outputs]}")
        batch_dim = inputs[0].shape[0]
        self.max_batch: int | None = batch_dim if isinstance(batch_dim, int) else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if self.max_batch is None or n == self.max_batch:
            return self.session.run(["prob"], {"image": batch})[0].astype(np.float32, copy=False)
        # A fixed-batch graph: run full batches, pad the last one with copies of its last image.
        out = []
        for i in range(0, n, self.max_batch):
            chunk = batch[i : i + self.max_batch]
            pad = self.max_batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            out.append(self.session.run(["prob"], {"image": chunk})[0][: self.max_batch - pad])
        return np.concatenate(out).astype(np.float32, copy=False)

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "onnxruntime": ort.__version__,
            "providers": ",".join(self.session.get_providers()),
            "device": platform.processor() or platform.machine(),
        }
