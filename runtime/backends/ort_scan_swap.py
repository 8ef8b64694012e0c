"""Load-time scan swap for ONNX Runtime: a ``portable`` export runs its scans as LinearAttention where it can.

A portable export (the default, ``--scan portable``) holds every Mamba scan in stock operators (one ONNX ``Scan``
per scan: every ONNX Runtime from 1.17, OpenVINO, TensorRT load it) and records each scan in the metadata entry
``ultralbm.scan_swap``::

    {"form": "linear_attention", "min_onnxruntime": "1.25.1",
     "scans": [{"inputs": [u, delta, A, B, C, D, z, delta_bias], "output": y, "d_inner": 32}, ...]}

When the installed onnxruntime has ``com.microsoft.LinearAttention`` (>= 1.25.1; 1.25.0 lacks it), the backend
rewrites the model in memory before opening the session: each scan's region (the nodes between its eight inputs
and its output) is replaced by ``runtime.onnx_scan.linear_attention_nodes``, the one-kernel form that is the
fastest on ONNX Runtime CPU. The file on disk never changes; a region that is not what the record says is refused
(``SwapError``) and the backend runs the stock graph.
"""

from __future__ import annotations

import json
from typing import Callable

import onnx
from onnx import helper

from ..onnx_scan import CONTRIB_DOMAIN, linear_attention_nodes

SWAP_KEY = "ultralbm.scan_swap"
SWAP_FORM = "linear_attention"
# The first onnxruntime release that registers com.microsoft.LinearAttention (1.25.0 does not).
MIN_ORT_VERSION = "1.25.1"


class SwapError(ValueError):
    """The model's scan record does not match its graph (the stock graph runs instead)."""


def version_tuple(version: str) -> tuple[int, ...]:
    """'1.25.1' -> (1, 25, 1); local and pre-release tails ('+cu12', '.dev2025') are ignored."""
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def supports_linear_attention(ort_version: str) -> bool:
    return version_tuple(ort_version) >= version_tuple(MIN_ORT_VERSION)


def swap_record(scans: list[dict]) -> dict[str, str]:
    """The metadata entry a portable export writes (``scans``: inputs, output, d_inner of each scan)."""
    return {SWAP_KEY: json.dumps({"form": SWAP_FORM, "min_onnxruntime": MIN_ORT_VERSION, "scans": scans})}


def read_swap_record(model: onnx.ModelProto) -> dict | None:
    for prop in model.metadata_props:
        if prop.key == SWAP_KEY:
            try:
                record = json.loads(prop.value)
            except json.JSONDecodeError as e:
                raise SwapError(f"{SWAP_KEY} is not valid JSON ({e})") from None
            if not isinstance(record, dict) or not isinstance(record.get("scans"), list):
                raise SwapError(f"{SWAP_KEY} has no list of scans")
            return record
    return None


def _region(graph: onnx.GraphProto, producer: dict[str, int], inputs: list[str], output: str) -> set[int]:
    """Indices of the nodes that compute ``output`` from ``inputs`` (and constants made inside the region)."""
    stop, region, todo = set(inputs), set(), [output]
    while todo:
        tensor = todo.pop()
        if tensor in stop or tensor not in producer or producer[tensor] in region:
            continue
        region.add(producer[tensor])
        todo.extend(t for t in graph.node[producer[tensor]].input if t)
    return region


# Builds the nodes that replace one scan region: (name prefix, the eight inputs, the output, d_inner) -> nodes.
RegionForm = Callable[[str, list[str], str, int], list[onnx.NodeProto]]


def swap_scans(model: onnx.ModelProto, record: dict, form: RegionForm = linear_attention_nodes) -> onnx.ModelProto:
    """``model`` (changed in place) with every recorded scan region replaced by ``form``'s nodes (by default the
    LinearAttention form)."""
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    replace: dict[int, list[onnx.NodeProto]] = {}  # index of the region's output node -> its new nodes
    removed: set[int] = set()
    for k, scan in enumerate(record["scans"]):
        try:
            inputs, output, d_inner = list(scan["inputs"]), str(scan["output"]), int(scan["d_inner"])
        except (KeyError, TypeError, ValueError):
            raise SwapError(f"scan {k} of {SWAP_KEY} lacks inputs, output or d_inner") from None
        if len(inputs) != 8 or output not in producer or d_inner < 1:
            raise SwapError(f"scan {k}: 8 inputs and a produced output expected, got {len(inputs)} inputs, output {output!r}")
        region = _region(graph, producer, inputs, output)
        made = {t for i in region for t in graph.node[i].output}
        used = set(inputs) | {t for i in region for t in graph.node[i].input}
        outside = {t for i, node in enumerate(graph.node) if i not in region for t in node.input} | {o.name for o in graph.output}
        leaks = (made & outside) - {output}
        if leaks or region & removed or not set(inputs) <= used:
            raise SwapError(f"scan {k} ({output}): its region is not closed between the recorded inputs and output")
        removed |= region
        replace[producer[output]] = form(f"{output}/{SWAP_FORM}", inputs, output, d_inner)
    nodes = []
    for i, node in enumerate(graph.node):
        if i in replace:
            nodes += replace[i]
        elif i not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    kept = [p for p in model.metadata_props if p.key != SWAP_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return model


def swapped_bytes(data: bytes, ort_version: str) -> bytes | None:
    """The serialized model with its scans swapped, or None when it records none or ``ort_version`` lacks the op."""
    if SWAP_KEY.encode() not in data or not supports_linear_attention(ort_version):
        return None
    model = onnx.load_from_string(data)
    record = read_swap_record(model)
    if record is None:
        return None
    return swap_scans(model, record).SerializeToString()
