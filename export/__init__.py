"""Export: checkpoint -> exact, fast, self-describing ONNX (and, from there, TensorRT engines)."""

from .onnx_export import EXPORT_SCANS, ExportError, ExportResult, export_onnx, read_metadata, resolve_scan
from .parity import ParityReport, check_parity

__all__ = [
    "EXPORT_SCANS",
    "ExportError",
    "ExportResult",
    "ParityReport",
    "check_parity",
    "export_onnx",
    "read_metadata",
    "resolve_scan",
]
