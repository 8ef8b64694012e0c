"""Which forms the selective scan can take in an exported graph, and which runtime runs which (torch-free).

Traced forms are the registered recurrence solvers (``ops.scan_strategies()``: the scan unrolled into
Mul/Add/Slice/Concat while tracing). Lowered forms start as one ``ultralbm::SelectiveScan`` node (``scan_node``)
that ``scan_lowering`` rewrites after tracing.
"""

from __future__ import annotations

# The custom node a lowered export starts from (schema in ``export.scan_node``).
SCAN_NODE_DOMAIN = "ultralbm"
SCAN_NODE_OP = "SelectiveScan"

LOWERED_FORMS = ("portable", "loop", "linear_attention", "plugin")
TARGETS = ("onnxruntime", "tensorrt", "openvino")
# Forms that need ONNX Runtime's contrib ops (onnxruntime >= 1.25.1); TensorRT and OpenVINO cannot load them.
ORT_ONLY_SCANS = ("linear_attention",)
# Forms OpenVINO cannot read: the contrib op, and the plugin form's custom node (OpenVINO does not expand the
# model-local function).
OPENVINO_UNREADABLE = ("linear_attention", "plugin")
UNSUPPORTED_SCANS = {"onnxruntime": (), "tensorrt": ORT_ONLY_SCANS, "openvino": OPENVINO_UNREADABLE}
# What "auto" picks per target. ONNX Runtime: `portable`, the stock Scan graph every runtime loads, which the ORT
# backend swaps to the one-kernel LinearAttention form at load time on onnxruntime >= 1.25.1 (as fast as
# `linear_attention`, benchmarks/export_strategies.py; runs on onnxruntime 1.17 too). TensorRT: the log-depth
# Blelloch scan, whose plain elementwise ops build in seconds; `loop`/`portable` build too, but run their 256 steps
# one after another on the GPU (engines could not be timed here: no GPU that TensorRT-RTX runs on). OpenVINO: the
# Scan graph (`loop`, with the state first in its Mul: see scan_lowering._scan_body).
AUTO_SCAN = {"onnxruntime": "portable", "tensorrt": "blelloch", "openvino": "loop"}
# What "auto" picks for networks whose scans the one-node forms cannot express (ModelSpec.lowered_scan False:
# VMamba's ungated SS2D): the fastest traced form on both targets (blelloch, 1.44x the floor on ONNX Runtime CPU
# against 1.98x for chunked, benchmarks/export_strategies.py).
AUTO_TRACED_SCAN = {"onnxruntime": "blelloch", "tensorrt": "blelloch", "openvino": "blelloch"}
