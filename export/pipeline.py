"""Export chains as API (the CLI only prints): checkpoint -> any format of the format table.

``export_model`` looks the target up in ``runtime.formats`` and calls its exporter, so a new export target is a
converter module plus a row in that table. Every exporter takes ``(checkpoint, output, **options)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from ultralbm_edge.checkpoint import Checkpoint
from ultralbm_edge.runtime.backends.tensorrt_env import load_tensorrt
from ultralbm_edge.runtime.files import check_output
from ultralbm_edge.runtime.formats import UnknownFormat, format_named

from .errors import ExportError
from .onnx_export import ExportResult, export_onnx
from .tensorrt import EngineResult, engine_from_onnx


def export_model(checkpoint: Checkpoint | str | Path, output: str | Path, *, format: str = "onnxruntime", **options: Any) -> Any:
    """Export ``checkpoint`` to ``output`` in ``format`` (a name in the format table) with that exporter's
    ``options``; returns the exporter's result."""
    try:
        fmt = format_named(format)
    except UnknownFormat as e:
        raise ExportError(str(e)) from None
    if fmt.exporter is None:
        raise ExportError(f"{format} files are written by training, not exported")
    module_name, function = fmt.exporter.split(":")
    return getattr(importlib.import_module(module_name), function)(checkpoint, output, **options)


def export_engine(
    checkpoint: Checkpoint | str | Path,
    output: str | Path,
    *,
    precision: str = "fp16",
    calib: str | Path | None = None,
    onnx_output: str | Path | None = None,
    on_exported: Callable[[ExportResult], None] | None = None,
    overwrite: bool = False,
    **export_options: Any,
) -> tuple[ExportResult, EngineResult]:
    """Export ``checkpoint`` to ONNX for TensorRT (parity-checked; ``onnx_output``, by default beside ``output``),
    then build the ``precision`` engine ``output`` from it, calibrating INT8 on ``calib`` images first.
    ``on_exported`` hears of the ONNX before the (longer) engine build starts."""
    output = Path(output)
    onnx_output = Path(onnx_output) if onnx_output else output.with_suffix(".onnx")
    # The refusals before the export's minutes of work: no TensorRT, or an engine that exists.
    load_tensorrt(export_options.pop("package", "auto"))
    check_output(output, overwrite=overwrite)
    exported = export_onnx(checkpoint, onnx_output, target="tensorrt", overwrite=overwrite, **export_options)
    if on_exported:
        on_exported(exported)
    return exported, engine_from_onnx(exported.path, output, precision=precision, calib=calib, overwrite=overwrite)
