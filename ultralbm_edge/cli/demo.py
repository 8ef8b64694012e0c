"""``ultralbm-edge demo``: the main job on the bundled default, end to end."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL, SAMPLE_IMAGES, SAMPLES_DIR

from . import app
from ._common import fail, needs_torch, overwrite_option


@app.command()
def demo(
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Folder for everything the demo writes (default: a new folder in the temp directory)."
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Bundled name or .pth checkpoint to start from."),
    runs: int = typer.Option(20, min=1, max=10000, help="Timed runs per batch size in the benchmark."),
    overwrite: bool = overwrite_option("the output folder of an earlier demo"),
) -> None:
    """Bundled checkpoint -> exact ONNX -> masks for the bundled real images -> accuracy -> latency."""
    needs_torch("demo")
    from ultralbm_edge.export import export_onnx
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.benchmark import benchmark_model
    from ultralbm_edge.runtime.dataset import first_images
    from ultralbm_edge.runtime.evaluate import evaluate
    from ultralbm_edge.runtime.model_files import resolve_model
    from ultralbm_edge.runtime.predict import PredictOptions, predict

    if output is None:
        output = Path(tempfile.mkdtemp(prefix="ultralbm-demo-"))
    elif output.exists() and any(output.iterdir()) and not overwrite:
        fail(f"{output}: exists and is not empty — pass --overwrite to replace the demo's files there, or choose another -o")
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = resolve_model(model, "torch")
    typer.echo(f"1/4 export   {checkpoint} -> {output / 'model.onnx'}")
    result = export_onnx(checkpoint, output / "model.onnx", dynamic_batch=True, parity_images=SAMPLE_IMAGES, overwrite=True)
    typer.echo(f"             {result.nodes} nodes, {result.seconds:.1f} s")
    for parity in result.parities:
        typer.echo(f"             {parity.summary()}")
    backend = open_backend(result.path, threads=None)
    summary = predict([SAMPLE_IMAGES], backend, output / "predictions", PredictOptions(overlay=True, save_probs=True, overwrite=True))
    typer.echo(f"2/4 predict  {summary.ok} images segmented in {summary.seconds:.1f} s -> {output / 'predictions'} (masks/, overlays/, results.csv)")
    scores = evaluate(backend, SAMPLES_DIR)
    typer.echo(
        f"3/4 evaluate {scores['n_images']} bundled images with expert masks: DSC {scores['dsc'] * 100:.2f}, "
        f"IoU {scores['iou'] * 100:.2f}, mean Dice {scores['mean_dice'] * 100:.2f}"
    )
    bench = benchmark_model("model.onnx", backend, first_images(SAMPLE_IMAGES, 8), [1, 8], warmup=3, runs=runs)
    b1, b8 = bench.batches
    typer.echo(
        f"4/4 latency  ONNX Runtime CPU: batch 1 p50 {b1.p50_ms:.1f} ms; batch 8 {b8.per_image_ms:.1f} ms/image "
        f"({b8.images_per_s:.0f} images/s); preprocessing {bench.preprocess_ms:.1f} ms/image"
    )
    typer.echo(f"done: results are in {output.resolve()}")
