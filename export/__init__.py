"""Export: checkpoint -> exact, self-describing ONNX, and from there TensorRT engines.

Submodules are imported on first use (PEP 562), so that the torch-free parts (``tensorrt``, ``fp16``,
``scan_lowering``, ``scan_policy``) work on a device without PyTorch: ``from ultralbm_edge.export import
build_engine`` never imports torch, ``export_onnx`` does.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ExportError": "errors",
    "ExportResult": "onnx_export",
    "export_onnx": "onnx_export",
    "export_scans": "onnx_export",
    "resolve_scan": "onnx_export",
    "check_parity": "parity",
    "reference_probs": "parity",
    "lower_scan_nodes": "scan_lowering",
    "strip_scan_function": "scan_lowering",
    "AUTO_SCAN": "scan_policy",
    "AUTO_TRACED_SCAN": "scan_policy",
    "LOWERED_FORMS": "scan_policy",
    "ORT_ONLY_SCANS": "scan_policy",
    "EngineResult": "tensorrt",
    "build_engine": "tensorrt",
    "engine_from_onnx": "tensorrt",
    "export_engine": "pipeline",
    "export_model": "pipeline",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
