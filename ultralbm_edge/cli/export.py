"""``ultralbm-edge export CHECKPOINT``: the toolkit's front door."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app
from ._common import fail


@app.command()
def export(
    checkpoint: str = typer.Argument("ultralbm", help="A .pth checkpoint, or a bundled model name (ultralbm, ultralbm-t)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="ONNX file to write (default: <checkpoint stem>.onnx)."),
    scan: str = typer.Option(
        "auto", help="Scan strategy: auto, blelloch, parallel, chunked, sequential, loop, linear_attention, plugin."
    ),
    target: str = typer.Option("onnxruntime", help="What 'auto' optimises for: onnxruntime or tensorrt (implied by --engine)."),
    image_size: int = typer.Option(256, help="Square input size (a multiple of 32)."),
    batch: int = typer.Option(1, help="Fixed batch size of the graph."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Make the batch dimension dynamic instead."),
    opset: int = typer.Option(17, help="ONNX opset (17-20)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision internals (scan, norms, sigmoid kept FP32)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Verify parity with PyTorch on real images."),
    parity_images: Optional[Path] = typer.Option(None, help="Folder of images for the parity check."),
    engine: Optional[str] = typer.Option(None, help="Also build a TensorRT engine of this precision: fp32, fp16 or int8."),
    calib: Optional[Path] = typer.Option(None, help="With --engine int8: calibration images (a Q/DQ ONNX is written first)."),
) -> None:
    """Export a checkpoint to an exact, self-describing ONNX model (and print a parity report)."""
    from ultralbm_edge.export import ExportError, export_onnx
    from ultralbm_edge.runtime.models import ModelNotFound, resolve_model

    try:
        source = resolve_model(checkpoint)
    except ModelNotFound as e:
        fail(str(e))
    out = output or Path(source.stem + (".fp16" if fp16 else "") + ".onnx")
    if engine:
        target = "tensorrt"
    try:
        result = export_onnx(
            source, out, scan=scan, target=target, image_size=image_size, batch=batch, dynamic_batch=dynamic_batch,
            opset=opset, fp16=fp16, check=check, parity_images=parity_images,
        )  # fmt: skip
    except (ExportError, FileNotFoundError) as e:
        fail(str(e))
    size_kb = result.path.stat().st_size / 1024
    meta = result.metadata
    typer.echo(
        f"wrote {result.path} ({size_kb:.0f} KB, {result.nodes} nodes) in {result.seconds:.1f} s: {meta.variant}, "
        f"scan={meta.scan_strategy}, {meta.precision}, batch={'dynamic' if dynamic_batch else batch}, opset {opset}"
    )
    if result.parity:
        typer.echo(result.parity.summary())
    else:
        typer.echo("parity check skipped (--no-check)")
    if engine:
        from .engine import build_and_report

        build_and_report(result.path, None, engine, calib)
