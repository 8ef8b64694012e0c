"""``ultralbm-edge export CHECKPOINT``: the toolkit's front door."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL

from . import app
from ._common import needs_torch, overwrite_option, status


@app.command()
def export(
    checkpoint: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="A .pth checkpoint, or a bundled model name (ultralbm, ultralbm-t)."),
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
    overwrite: bool = overwrite_option("existing output files (never the checkpoint)"),
) -> None:
    """Export a checkpoint to an exact, self-describing ONNX model (and print a parity report)."""
    needs_torch("export")
    from ultralbm_edge.export import export_engine, export_onnx
    from ultralbm_edge.runtime.model_files import resolve_model

    from .engine import report_engine

    source = resolve_model(checkpoint, "torch")
    out = output or Path(source.stem + (".fp16" if fp16 else "") + ".onnx")
    options = dict(scan=scan, image_size=image_size, batch=batch, dynamic_batch=dynamic_batch, opset=opset, fp16=fp16,
                   check=check, parity_images=parity_images, overwrite=overwrite)  # fmt: skip

    def report(result) -> None:
        meta = result.metadata
        typer.echo(
            f"wrote {result.path} ({result.path.stat().st_size / 1024:.0f} KB, {result.nodes} nodes) in {result.seconds:.1f} s: "
            f"{meta.variant}, scan={meta.scan_strategy}, {meta.precision}, batch={'dynamic' if dynamic_batch else batch}, "
            f"opset {opset}"
        )
        typer.echo(result.parity.summary() if result.parity else "parity check skipped (--no-check)")

    with status(f"exporting {source.name} (tracing, checking parity on real images)"):
        if engine:
            from ultralbm_edge.export.tensorrt import engine_path

            exported, built = export_engine(source, engine_path(out, engine), onnx_output=out, precision=engine, calib=calib,
                                            on_exported=report, **options)  # fmt: skip
        else:
            report(export_onnx(source, out, target=target, **options))
    if engine:
        report_engine(built, exported.path, calib)
