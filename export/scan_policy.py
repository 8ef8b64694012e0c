"""Which forms the selective scan can take in an exported graph, and which runtime runs which (torch-free).

Traced forms are the registered recurrence solvers (``ops.scan_strategies()``: the scan unrolled into
Mul/Add/Slice/Concat while tracing). Lowered forms start as one ``ultralbm::SelectiveScan`` node (``scan_node``)
that ``scan_lowering`` rewrites after tracing.
"""

from __future__ import annotations

# The custom node a lowered export starts from (schema in ``export.scan_node``).
SCAN_NODE_DOMAIN = "ultralbm"
SCAN_NODE_OP = "SelectiveScan"

LOWERED_FORMS = ("loop", "linear_attention", "plugin")
TARGETS = ("onnxruntime", "tensorrt")
# Forms that need ONNX Runtime's contrib ops; TensorRT cannot build them.
ORT_ONLY_SCANS = ("linear_attention",)
# What "auto" picks per target. ONNX Runtime CPU: LinearAttention runs the whole recurrence in one kernel
# (1.27x the no-scan floor vs 1.55x for blelloch, benchmarks/export_strategies.py). TensorRT: the log-depth
# Blelloch scan, whose plain elementwise ops build in seconds; `loop` builds too, but runs its 256 steps one
# after another on the GPU (engines could not be timed here: no GPU that TensorRT-RTX runs on).
AUTO_SCAN = {"onnxruntime": "linear_attention", "tensorrt": "blelloch"}
