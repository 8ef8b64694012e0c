"""``ultralbm-edge evaluate MODEL --data DIR``: the paper's metrics for any model file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL

from . import app
from ._common import batch_size_option, device_option, fail, overwrite_option


@app.command()
def evaluate(
    model: str = typer.Argument(DEFAULT_MODEL, help="A .onnx, .engine or .pth file, or a bundled name."),
    data: Path = typer.Option(..., help="Folder with images/ and masks/ (same stems)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON here."),
    backend: str = typer.Option("auto", help="auto, onnxruntime, tensorrt or torch."),
    device: Optional[str] = device_option(),
    batch_size: int = batch_size_option(),
    overwrite: bool = overwrite_option("an existing --json file"),
) -> None:
    """DSC, IoU, accuracy, sensitivity, specificity (global confusion matrix at 256x256) and mean per-image Dice."""
    from ultralbm_edge.runtime.backends import BackendError, open_backend
    from ultralbm_edge.runtime.dataset import DatasetError
    from ultralbm_edge.runtime.evaluate import evaluate as run_evaluate
    from ultralbm_edge.runtime.files import check_output, write_text_atomic

    if json_path:
        check_output(json_path, overwrite=overwrite)

    try:
        engine = open_backend(model, backend=backend, device=device)
        result = run_evaluate(engine, data, batch_size=batch_size)
    except (BackendError, DatasetError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(
        f"{result['n_images']} images  DSC {result['dsc'] * 100:.2f}  IoU {result['iou'] * 100:.2f}  "
        f"Acc {result['accuracy'] * 100:.2f}  Sens {result['sensitivity'] * 100:.2f}  "
        f"Spec {result['specificity'] * 100:.2f}  mean Dice {result['mean_dice'] * 100:.2f}  ({engine.name}, {result['seconds']} s)"
    )
    if json_path:
        write_text_atomic(json_path, json.dumps(result, indent=2) + "\n")
