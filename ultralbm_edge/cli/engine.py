"""``ultralbm-edge calibrate`` (INT8 Q/DQ ONNX) and ``ultralbm-edge build-engine`` (TensorRT engines); torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app
from ._common import Verbosity, overwrite_option, progress, say, status


@app.command()
def calibrate(
    model: Path = typer.Option(..., "--model", "-m", help="An FP32 ONNX exported by `ultralbm-edge export`."),
    images: Path = typer.Option(..., help="Folder of dermoscopy images (read through the same preprocessing)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Q/DQ ONNX to write (default: <model>.int8.onnx)."),
    method: str = typer.Option("percentile", help="Calibration method: minmax, entropy or percentile."),
    num_images: int = typer.Option(256, min=1, max=100_000, help="How many images to calibrate on."),
    overwrite: bool = overwrite_option("an existing Q/DQ ONNX"),
) -> None:
    """Write an INT8 (Q/DQ) ONNX calibrated on real images; it runs on ONNX Runtime and builds into TensorRT INT8."""
    from ultralbm_edge.calibration import quantize_int8

    with progress("reading calibration images") as on_progress:
        result = quantize_int8(model, images, output, method=method, num_images=num_images, progress=on_progress,
                               overwrite=overwrite, quiet=Verbosity.level < 2)  # fmt: skip
    typer.echo(
        f"wrote {result.path}: {result.method} calibration on {result.n_images} images in {result.seconds:.1f} s; "
        f"{result.quantized_nodes} tensors quantized, {result.excluded_nodes} nodes kept FP32 (Mamba blocks, depthwise, "
        "first/last conv, norms)"
    )


@app.command("build-engine")
def build_engine_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="ONNX from `ultralbm-edge export` (or its INT8 Q/DQ copy)."),
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
    from ultralbm_edge.export.tensorrt import engine_from_onnx

    with status(f"building a {precision} TensorRT engine from {model.name} (TensorRT takes a while)"):
        result = engine_from_onnx(
            model, output, precision=precision, calib=calib, implicit=implicit, min_batch=min_batch or (1 if batch else None),
            opt_batch=opt_batch or batch, max_batch=max_batch or batch, workspace_mb=workspace, timing_cache=timing_cache,
            package=trt_package, overwrite=overwrite,
        )  # fmt: skip
    report_engine(result, model, calib)


def report_engine(result, model: Path, calib: Optional[Path]) -> None:
    """Print what an engine build from ``model`` wrote (also used by ``export --engine``)."""
    if result.source != model:
        say(f"calibrated {result.source} on {calib}")
    side = result.sidecar
    typer.echo(
        f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB) + {result.path.name}.json in {result.seconds:.1f} s: "
        f"{side['tensorrt_package']} {side['tensorrt_version']}, {side['precision']}, batch {side['batch']}, "
        f"targets: {side['compute_capabilities']}"
    )
    for note in result.notes:
        say(f"note: {note}")
