"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers when installed and asked for.

A ``portable`` export (the default) is opened with its scans swapped to ONNX Runtime's LinearAttention kernel when
this onnxruntime has it and the session runs on the CPU (``ort_scan_swap``); otherwise, or if the swapped graph
does not load, its stock ``Scan`` graph runs. ``scan_form`` says which one this backend runs.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..formats import INPUT_NAME, OUTPUT_NAME
from ..metadata import MetadataError, ModelMetadata
from ..verbosity import ort_log_severity
from .base import Backend, BackendError, parse_device
from .ort_scan_swap import MIN_ORT_VERSION, SWAP_FORM, swapped_bytes

# Execution providers tried for device="cuda", best first; CPU is always the fallback.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None, swap_scan: bool = True) -> None:
        """``swap_scan=False`` runs a portable export's stock graph even where the LinearAttention swap applies."""
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
        self.scan_form = "as exported"
        self.session = self._swapped_session(options, providers) if swap_scan and kind == "cpu" else None
        try:
            if self.session is None:
                self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types (InvalidGraph, NoSuchFile, ...)
            if "LinearAttention" in str(e):  # the --scan linear_attention form needs onnxruntime >= 1.25.1
                raise BackendError(
                    f"{self.path}: its scan uses ONNX Runtime's LinearAttention op, which onnxruntime {ort.__version__} "
                    f"lacks (it needs >= {MIN_ORT_VERSION}) — upgrade onnxruntime, or re-export it with the default "
                    "`ultralbm-edge export -m CHECKPOINT` (portable: runs on every onnxruntime)"
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

    def _swapped_session(self, options: ort.SessionOptions, providers: list) -> ort.InferenceSession | None:
        """A session on the model with its recorded scans swapped to LinearAttention, or None (nothing to swap, this
        onnxruntime lacks the op, or the swapped graph fails to load: the stock graph runs then)."""
        try:
            data = swapped_bytes(self.path.read_bytes(), ort.__version__)
            if data is None:
                return None
            session = ort.InferenceSession(data, options, providers=providers)
        except Exception as e:  # noqa: BLE001 - a SwapError, an unreadable file, ORT's own load errors
            self.scan_form = f"as exported (the {SWAP_FORM} swap failed: {type(e).__name__}: {str(e)[:200]})"
            return None
        self.scan_form = f"{SWAP_FORM} (swapped in at load)"
        return session

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "onnxruntime": ort.__version__,
            "providers": ",".join(self.session.get_providers()),
            "scan": self.scan_form,
            "device": platform.processor() or platform.machine(),
            "threads": str(self.session.get_session_options().intra_op_num_threads or "default"),
        }
