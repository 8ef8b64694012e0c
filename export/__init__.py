"""Export: checkpoint -> exact, fast, self-describing ONNX (and, from there, TensorRT engines)."""

from .onnx_export import (
    AUTO_SCAN,
    EXPORT_SCANS,
    ORT_ONLY_SCANS,
    TRACED_SCANS,
    ExportError,
    ExportResult,
    export_onnx,
    read_metadata,
    resolve_scan,
)
from .parity import ParityReport, check_parity
from .scan_lowering import LOWERED_FORMS, lower_scan_nodes, strip_scan_function

__all__ = [
    "AUTO_SCAN",
    "EXPORT_SCANS",
    "LOWERED_FORMS",
    "ORT_ONLY_SCANS",
    "TRACED_SCANS",
    "ExportError",
    "ExportResult",
    "ParityReport",
    "check_parity",
    "export_onnx",
    "lower_scan_nodes",
    "read_metadata",
    "resolve_scan",
    "strip_scan_function",
]
