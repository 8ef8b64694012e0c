"""``ultralbm-edge evaluate -m MODEL --data DIR``: accuracy on expert masks, overall and per image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import app
from ._common import (
    batch_size_option,
    check_outputs,
    device_option,
    model_option,
    overwrite_option,
    progress,
    say,
    tta_option,
    write_result,
)


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="Labelled folder: images/ and masks/ (paired by relative path and name)."),
    model: str = model_option(),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every number as JSON here ('-': standard output)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write per-image scores (worst first) as CSV here."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML report here (worst cases with both contours)."),
    keep_largest: bool = typer.Option(True, "--keep-largest/--no-keep-largest", help="As predict: drop specks."),
    min_component: float = typer.Option(0.25, min=0.0, max=1.0, help="As predict: keep components of at least this fraction."),
    fill_holes: bool = typer.Option(True, "--fill-holes/--no-fill-holes", help="As predict: fill holes."),
    tta: bool = tta_option(),
    backend: str = typer.Option("auto", help="auto (from the suffix), onnxruntime, openvino, litert, tensorrt or torch."),
    device: Optional[str] = device_option(),
    batch_size: int = batch_size_option(),
    overwrite: bool = overwrite_option("existing --json/--csv/--report files"),
) -> None:
    """DSC, IoU, accuracy, sensitivity, specificity: raw (the paper's protocol, 256 px) and post-processed (exactly
    what predict writes, at each image's size), with per-image Dice and IoU, worst first."""
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.evaluate import evaluate as run_evaluate
    from ultralbm_edge.runtime.evaluate import evaluation_report, per_image_csv
    from ultralbm_edge.runtime.postprocess import PostprocessOptions
    from ultralbm_edge.runtime.tta import with_flip_tta

    check_outputs(json_path, csv_path, report, overwrite=overwrite)
    engine = with_flip_tta(open_backend(model, backend=backend, device=device), tta)
    post = PostprocessOptions(engine.metadata.threshold, keep_largest, fill_holes, min_component)
    with progress("evaluating") as on_progress:
        result = run_evaluate(engine, data, post=post, batch_size=batch_size, on_progress=on_progress)
    pp = result["postprocessed"]
    for label, m in (("raw", result), ("post-processed", pp)):
        typer.echo(
            f"{result['n_images']} images  {label:15s} DSC {m['dsc'] * 100:.2f}  IoU {m['iou'] * 100:.2f}  "
            f"Acc {m['accuracy'] * 100:.2f}  Sens {m['sensitivity'] * 100:.2f}  Spec {m['specificity'] * 100:.2f}  "
            f"mean Dice {m['mean_dice'] * 100:.2f}"
        )
    worst = ", ".join(f"{s['image']} ({s['dice']:.2f})" for s in result["per_image"][:3])
    typer.echo(f"worst Dice: {worst}  ({engine.name}, {result['seconds']} s)")
    if json_path:
        write_result(json_path, json.dumps(result, indent=2) + "\n", overwrite)
    if csv_path:
        write_result(csv_path, per_image_csv(result), overwrite)
    if report:
        say("drawing the report")
        typer.echo(f"report: {evaluation_report(engine, result, report)}")
