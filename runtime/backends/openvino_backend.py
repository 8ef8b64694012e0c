"""OpenVINO backend (CPU): runs OpenVINO IR (``.xml`` + ``.bin``, written by ``ultralbm-edge export --format
openvino``) and, with ``--backend openvino``, exported ``.onnx`` files.

Two settings keep it exact. Inference precision is pinned to f32: OpenVINO's CPU plugin defaults to bf16 on CPUs
with AMX/AVX512-BF16, which moves probabilities by up to 7e-2. And an ONNX ``Scan`` whose body multiplies a
scanned slice by the state in that operand order is refused: OpenVINO (2024.6 to 2026.4, static shapes) computes
it silently wrong; exports from this version write the state first (``export/scan_lowering.py``).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import openvino as ov

from ..formats import INPUT_NAME, OUTPUT_NAME
from ..metadata import METADATA_PREFIX, MetadataError, ModelMetadata
from .base import Backend, BackendError, parse_device

VERSION = ov.__version__.split("-")[0]  # '2026.4.1-22982-e213a147257-releases/2026/4' -> '2026.4.1'
LABEL = f"openvino {VERSION} CPU f32"  # how parity reports name this runtime
# f32: the CPU plugin's default on bf16-capable CPUs is bf16, which is not exact.
CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
# Ops OpenVINO has no conversion for, and what to export instead.
_UNREADABLE = {
    "LinearAttention": "ONNX Runtime's LinearAttention op (the --scan linear_attention form)",
    "SelectiveScan": "the ultralbm::SelectiveScan node (the --scan plugin form)",
}
_COMMUTATIVE = {"Mul", "Add", "Max", "Min", "Sum", "Mean"}


def scan_bodies_openvino_gets_wrong(model) -> list[str]:
    """Names of ``Scan`` nodes (in ``model``, an onnx.ModelProto) whose body applies a commutative op to (scanned
    slice, state) in that order, which OpenVINO computes as (slice, slice) from the second step on."""
    bad = []
    for node in model.graph.node:
        if node.op_type != "Scan":
            continue
        body = next(a.g for a in node.attribute if a.name == "body")
        n_scan = next((a.i for a in node.attribute if a.name == "num_scan_inputs"), 0)
        names = [i.name for i in body.input]
        state, sliced = set(names[: len(names) - n_scan]), set(names[len(names) - n_scan :])
        if any(n.op_type in _COMMUTATIVE and len(n.input) == 2 and n.input[0] in sliced and n.input[1] in state for n in body.node):
            bad.append(node.name or node.output[0])
    return bad


def _refuse_known_wrong_onnx(path: Path) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX after all: read_model reports it
        return
    bad = scan_bodies_openvino_gets_wrong(model)
    if bad:
        raise BackendError(
            f"{path}: its Scan body multiplies the scanned slice by the state in the operand order OpenVINO computes "
            f"wrongly ({len(bad)} Scan node(s), e.g. {bad[0]}) — re-export it with this ultralbm-edge "
            "(`ultralbm-edge export -m CHECKPOINT`), or run it with --backend onnxruntime"
        )


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None) -> None:
        self.path = Path(path)
        kind, _ = parse_device(device)
        if kind != "cpu":
            raise BackendError(f"{self.path}: the OpenVINO backend runs on the CPU here; use --device cpu or another backend")
        if self.path.suffix.lower() == ".onnx":
            _refuse_known_wrong_onnx(self.path)
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError/GeneralFailure with the frontend's text
            why = next((what for op, what in _UNREADABLE.items() if op in str(e)), None)
            if why:
                raise BackendError(
                    f"{self.path}: OpenVINO cannot read {why} — export the default form for it "
                    "(`ultralbm-edge export -m CHECKPOINT`, or --format openvino for IR)"
                ) from None
            raise BackendError(f"{self.path}: OpenVINO cannot read this model ({type(e).__name__}: {str(e)[:300]})") from None
        # OpenVINO keeps an ONNX file's metadata_props under rt_info "framework", also in IR converted from it.
        framework = dict(model.get_rt_info()["framework"]) if model.has_rt_info(["framework"]) else {}
        props = {k: v.astype(str) for k, v in framework.items() if k.startswith(METADATA_PREFIX)}
        try:
            self.metadata = ModelMetadata.from_props(props, source=str(self.path))
        except MetadataError as e:
            raise BackendError(str(e)) from None
        size = self.metadata.image_size
        inputs, outputs = model.inputs, model.outputs
        in_shape = inputs[0].get_partial_shape() if len(inputs) == 1 else None
        if in_shape is None or inputs[0].get_any_name() != INPUT_NAME or str(in_shape[1:]) != f"[3,{size},{size}]":
            raise BackendError(
                f"{self.path}: expected one input {INPUT_NAME!r} of shape [N, 3, {size}, {size}], the model has "
                f"{[(i.get_any_name(), str(i.get_partial_shape())) for i in inputs]} — re-export it with `ultralbm-edge export`"
            )
        if len(outputs) != 1 or OUTPUT_NAME not in outputs[0].get_names():
            raise BackendError(f"{self.path}: expected one output {OUTPUT_NAME!r}, the model has {[o.get_names() for o in outputs]}")
        if in_shape[0].is_static:
            self.max_batch, self.fixed_batch = in_shape[0].get_length(), True
        config = dict(CONFIG, **({"INFERENCE_NUM_THREADS": str(threads)} if threads else {}))
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # noqa: BLE001
            raise BackendError(f"{self.path}: OpenVINO cannot compile this model for the CPU ({type(e).__name__}: {str(e)[:300]})") from None
        self.request = self.compiled.create_infer_request()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        return np.array(self.request.get_output_tensor(0).data, copy=True)  # the request reuses its output buffer

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "openvino": VERSION,
            "providers": "CPU " + self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "device": platform.processor() or platform.machine(),
        }
