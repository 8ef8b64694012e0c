"""``ultralbm-edge calibrate`` (INT8 Q/DQ ONNX) and ``ultralbm-edge build-engine`` (TensorRT engines); torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app
from ._common import fail, interactive, overwrite_option, progress_reporter


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="An FP32 ONNX exported by `ultralbm-edge export`."),
    images: Path = typer.Option(..., help="Folder of dermoscopy images (read through the same preprocessing)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Q/DQ ONNX to write (default: <model>.int8.onnx)."),
    method: str = typer.Option("percentile", help="Calibration method: minmax, entropy or percentile."),
    num_images: int = typer.Option(256, min=1, max=100_000, help="How many images to calibrate on."),
    overwrite: bool = overwrite_option("an existing Q/DQ ONNX"),
) -> None:
    """Write an INT8 (Q/DQ) ONNX calibrated on real images; it runs on ONNX Runtime and builds into TensorRT INT8."""
    from ultralbm_edge.calibration import CalibrationError, quantize_int8

    bar, on_progress = progress_reporter(interactive(), "calibrating")
    try:
        if bar:
            with bar:
                result = quantize_int8(model, images, output, method=method, num_images=num_images, progress=on_progress, overwrite=overwrite)
        else:
            result = quantize_int8(model, images, output, method=method, num_images=num_images, overwrite=overwrite)
    except CalibrationError as e:
        fail(str(e))
    typer.echo(
        f"wrote {result.path}: {result.method} calibration on {result.n_images} images in {result.seconds:.1f} s; "
        f"{result.quantized_nodes} tensors quantized, {result.excluded_nodes} nodes kept FP32 (Mamba blocks, depthwise, "
        "first/last conv, norms)"
    )


@app.command("build-engine")
def build_engine_cmd(
    model: Path = typer.Argument(..., help="ONNX from `ultralbm-edge export` (or its INT8 Q/DQ copy)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or int8."),
    calib: Optional[Path] = typer.Option(None, help="For int8 from an FP32 ONNX: calibration images (Q/DQ first)."),
    implicit: bool = typer.Option(
        False, "--implicit", help="TensorRT 10 only: calibrate --calib images inside the builder (entropy) instead of Q/DQ."
    ),
    batch: Optional[int] = typer.Option(None, min=1, max=4096, help="Shortcut for --min 1 --opt N --max N on a dynamic-batch ONNX."),
    min_batch: Optional[int] = typer.Option(None, "--min", min=1, max=4096, help="Optimization profile: smallest batch."),
    opt_batch: Optional[int] = typer.Option(None, "--opt", min=1, max=4096, help="Optimization profile: batch tuned for."),
    max_batch: Optional[int] = typer.Option(None, "--max", min=1, max=4096, help="Optimization profile: largest batch."),
    workspace: Optional[int] = typer.Option(None, min=1, help="Builder workspace limit in MB."),
    timing_cache: Optional[Path] = typer.Option(None, help="Timing cache file, read and updated (speeds up rebuilds)."),
    trt_package: str = typer.Option("auto", help="auto, tensorrt or tensorrt_rtx."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Engine file (default: <model>.<precision>.engine)."),
    overwrite: bool = overwrite_option("an existing engine (and its sidecar)"),
) -> None:
    """Build a TensorRT engine and its JSON sidecar (TensorRT 10/11 or TensorRT-RTX, whichever is installed)."""
    from ultralbm_edge.calibration import CalibrationError
    from ultralbm_edge.export.tensorrt import TensorRTError, engine_from_onnx

    try:
        result = engine_from_onnx(
            model, output, precision=precision, calib=calib, implicit=implicit, min_batch=min_batch or (1 if batch else None),
            opt_batch=opt_batch or batch, max_batch=max_batch or batch, workspace_mb=workspace, timing_cache=timing_cache,
            package=trt_package, overwrite=overwrite,
        )  # fmt: skip
    except (TensorRTError, CalibrationError) as e:
        fail(str(e))
    report_engine(result, model, calib)


def report_engine(result, model: Path, calib: Optional[Path]) -> None:
    """Print what an engine build from ``model`` wrote (also used by ``export --engine``)."""
    if result.source != model:
        typer.echo(f"calibrated {result.source} on {calib}")
    side = result.sidecar
    typer.echo(
        f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB) + {result.path.name}.json in {result.seconds:.1f} s: "
        f"{side['tensorrt_package']} {side['tensorrt_version']}, {side['precision']}, batch {side['batch']}, "
        f"targets: {side['compute_capabilities']}"
    )
    for note in result.notes:
        typer.echo(f"note: {note}")
