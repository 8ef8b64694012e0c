"""``ultralbm-edge export -m CHECKPOINT``: the toolkit's front door."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL

from . import app
from ._common import fail, needs_torch, overwrite_option, status


@app.command()
def export(
    checkpoint: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="A .pth checkpoint, or a bundled model name (ultralbm, ultralbm-t, ultralight-vm-unet)."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="File to write (default: <checkpoint stem>.onnx); .xml writes OpenVINO IR, .tflite LiteRT."
    ),
    format: str = typer.Option("auto", "--format", help="onnxruntime (ONNX), openvino (IR) or litert (.tflite); auto: from -o's suffix."),
    scan: str = typer.Option(
        "auto",
        help="Scan form: auto, portable, blelloch, parallel, chunked, sequential, loop, linear_attention, plugin (LiteRT: traced "
        "ones; resmamba-ulite and dermomamba, whose SS2D scans have no gate: traced ones).",
    ),
    target: str = typer.Option("onnxruntime", help="What 'auto' optimises for: onnxruntime, tensorrt (implied by --engine) or openvino."),
    image_size: int = typer.Option(256, help="Square input size (a multiple of 32)."),
    batch: int = typer.Option(1, help="Fixed batch size of the graph."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Make the batch dimension dynamic instead."),
    opset: int = typer.Option(17, help="ONNX opset (17-20)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision internals (scan, norms, sigmoid kept FP32)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Verify parity with PyTorch on real images."),
    parity_images: Optional[Path] = typer.Option(None, help="Folder of images for the parity check."),
    engine: Optional[str] = typer.Option(None, help="Also build a TensorRT engine of this precision: fp32, fp16 or int8."),
    calib: Optional[Path] = typer.Option(None, help="With --engine int8: calibration images (a Q/DQ ONNX is written first)."),
    overwrite: bool = overwrite_option("existing output files"),
) -> None:
    """Export a checkpoint to an exact, self-describing model (ONNX by default; OpenVINO IR, LiteRT) and print a
    parity report for every installed runtime that runs it."""
    needs_torch("export")
    from ultralbm_edge.export import export_engine, export_model, export_onnx
    from ultralbm_edge.runtime.files import check_output
    from ultralbm_edge.runtime.formats import format_named
    from ultralbm_edge.runtime.model_files import resolve_model

    from .engine import report_engine

    source = resolve_model(checkpoint, "torch")
    if output is not None:  # first: "-o is the checkpoint" is the mistake to name, not the suffix it implies
        check_output(output, inputs=[source], overwrite=overwrite)
    fmt = format_named(format) if format != "auto" else _format_of(output)
    if fmt.exporter is None or fmt.name == "tensorrt":
        fail(f"--format {fmt.name}: export writes onnxruntime, openvino or litert files (engines: --engine, or build-engine)")
    out = output or Path(source.stem + (".fp16" if fp16 else "") + fmt.suffixes[0])
    options = dict(scan=scan, image_size=image_size, batch=batch, dynamic_batch=dynamic_batch, check=check,
                   parity_images=parity_images, overwrite=overwrite)  # fmt: skip
    if fmt.name != "onnxruntime" and (fp16 or engine or target != "onnxruntime"):
        fail(f"--fp16, --engine and --target apply to ONNX exports; {fmt.name} files are written in fp32 (drop them)")

    def report(result) -> None:
        meta = result.metadata
        typer.echo(
            f"wrote {result.path} ({result.path.stat().st_size / 1024:.0f} KB, {result.nodes} nodes) in {result.seconds:.1f} s: "
            f"{meta.variant}, scan={meta.scan_strategy}, {meta.precision}, batch={'dynamic' if dynamic_batch else batch}"
            + (f", opset {opset}" if fmt.name != "litert" else "")
        )
        for parity in result.parities or [None]:
            typer.echo(parity.summary() if parity else "parity check skipped (--no-check)")

    with status(f"exporting {source.name} (tracing, checking parity on real images)"):
        if engine:
            from ultralbm_edge.export.tensorrt import engine_path

            exported, built = export_engine(source, engine_path(out, engine), onnx_output=out, precision=engine, calib=calib,
                                            on_exported=report, opset=opset, fp16=fp16, **options)  # fmt: skip
        elif fmt.name == "onnxruntime":
            report(export_onnx(source, out, target=target, opset=opset, fp16=fp16, **options))
        elif fmt.name == "openvino":
            report(export_model(source, out, format=fmt.name, opset=opset, **options))
        else:
            report(export_model(source, out, format=fmt.name, **options))
    if engine:
        report_engine(built, exported.path, calib)


def _format_of(output: Optional[Path]):
    """The format -o's suffix names (.xml, .tflite, ...); ONNX for no -o or a suffix no format claims."""
    from ultralbm_edge.runtime.formats import UnknownFormat, format_for, format_named

    try:
        return format_for(output) if output else format_named("onnxruntime")
    except UnknownFormat:
        return format_named("onnxruntime")
