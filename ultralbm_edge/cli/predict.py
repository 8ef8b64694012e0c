"""``ultralbm-edge predict INPUT...``: batch mask inference over files and folders."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import app
from ._common import (
    CPUS,
    device_option,
    fail,
    model_option,
    progress,
    say,
    threads_option,
    tta_option,
)


@app.command()
def predict(
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively).", show_default=False),
    model: str = model_option(),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (masks/, probs/, overlays/, results.csv)."),
    threshold: Optional[float] = typer.Option(None, help="Mask threshold (default: the model's, 0.5)."),
    save_probs: bool = typer.Option(False, "--save-probs", help="Also write probs/<stem>.npy (float32 model output)."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write overlays/<stem>.jpg (contour on the image)."),
    report: bool = typer.Option(False, "--report", help="Also write report.html: the cases to look at first, inline."),
    keep_largest: bool = typer.Option(True, "--keep-largest/--no-keep-largest", help="Drop specks smaller than --min-component."),
    min_component: float = typer.Option(
        0.25, min=0.0, max=1.0, help="Keep components at least this fraction of the largest one's area (0: the largest only)."
    ),
    fill_holes: bool = typer.Option(True, "--fill-holes/--no-fill-holes", help="Fill holes inside the lesion."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-b", min=1, max=1024, help="Images per inference batch, 1-1024 (default: 64 on a GPU, else 8)."
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, max=64, help="Threads decoding and writing, 1-64 (default: up to 16 on a GPU, else 2)."
    ),
    tta: bool = tta_option(),
    compile: bool = typer.Option(False, "--compile", help="PyTorch checkpoints on a CUDA GPU: torch.compile inside the CUDA graphs."),
    backend: str = typer.Option("auto", help="auto (from the suffix), onnxruntime, openvino, litert, tensorrt or torch."),
    device: Optional[str] = device_option(),
    threads: Optional[int] = threads_option(),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo every image, also with other settings (default: resume, skipping finished images)."
    ),
    max_megapixels: float = typer.Option(100.0, min=0.01, help="Refuse images declaring more pixels (decompression bombs)."),
    max_file_mb: float = typer.Option(100.0, min=0.1, help="Refuse image files larger than this."),
    ray: bool = typer.Option(
        False, "--ray", help="Run on a Ray cluster (RAY_ADDRESS, else a local instance): decoding and writing in CPU tasks, "
        "inference in an actor pool; same outputs and resume rules. Needs pip install 'ultralbm-edge\\[ray]'.",
    ),
    actors: Optional[int] = typer.Option(
        None, "--actors", min=1, max=4096, help="With --ray: inference actors (default: one per GPU with --device cuda, else 1)."
    ),
    gpus_per_actor: Optional[float] = typer.Option(
        None, "--gpus-per-actor", min=0.0, max=8.0, help="With --ray: GPUs per actor (default: 1 with --device cuda, else 0; 0.5: two per GPU)."
    ),
) -> None:
    """Segment lesions in dermoscopy images; exit 0 if all succeeded, 1 if some inputs failed, 2 on usage errors."""
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.imageio import ImageLimits
    from ultralbm_edge.runtime.predict import PredictOptions, iter_failures, prediction_report
    from ultralbm_edge.runtime.predict import predict as run_predict
    from ultralbm_edge.runtime.tta import with_flip_tta

    if threshold is not None and not 0.0 < threshold < 1.0:
        fail(f"--threshold {threshold} must be between 0 and 1")
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        fail(f"input not found: {', '.join(missing)}")
    if not ray and (actors is not None or gpus_per_actor is not None):
        fail("--actors and --gpus-per-actor spread inference over a Ray cluster: add --ray")
    if ray and tta:
        fail("--tta is not available with --ray (the cluster's actors open the model themselves): run without --ray")
    limits = ImageLimits(max_megapixels, max_file_mb)
    if ray:
        summary = _predict_on_ray(inputs, model, output, backend, device, threads, compile, actors, gpus_per_actor, batch_size,
                                  workers, PredictOptions(threshold, save_probs, overlay, keep_largest, fill_holes, min_component,
                                                          overwrite=overwrite, limits=limits))  # fmt: skip
    else:
        engine = with_flip_tta(open_backend(model, backend=backend, threads=threads, device=device, compile=compile), tta)
        on_gpu = engine.batch_stages() is not None
        batch_size = batch_size or (64 if on_gpu else 8)
        workers = workers or (min(16, CPUS) if on_gpu else 2)
        say(f"model {engine.path} on {engine.name} ({engine.describe().get('device', '')}), batch {batch_size}, {workers} workers")
        opts = PredictOptions(threshold, save_probs, overlay, keep_largest, fill_holes, min_component, batch_size, workers,
                              overwrite, limits)  # fmt: skip
        with progress("segmenting") as on_progress:
            summary = run_predict(inputs, engine, output, opts, on_progress)
    if summary.total == 0:
        fail(f"no images found in {', '.join(map(str, inputs))} (looked for .jpg .jpeg .png .bmp .tif .tiff)")
    typer.echo(
        f"{summary.ok} segmented, {summary.skipped} already done, {len(summary.failed)} failed "
        f"in {summary.seconds:.1f} s with {summary.engine} -> {summary.out_dir} (results.csv)"
    )
    if report:
        typer.echo(f"report: {prediction_report(summary)}")
    for line in iter_failures(summary):
        typer.secho(f"  failed: {line}", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(summary.exit_code)


def _predict_on_ray(inputs, model, output, backend, device, threads, compile, actors, gpus_per_actor, batch_size, workers, opts):
    """``predict --ray``: the same run through ``runtime.distributed`` (workers open the model; --workers caps the
    concurrent decode and write tasks)."""
    from ultralbm_edge.runtime.distributed import ClusterOptions, predict_ray

    on_gpu = (device or "cpu").startswith("cuda")
    opts.batch_size = batch_size or (64 if on_gpu else 8)
    cluster = ClusterOptions(actors=actors, gpus_per_actor=gpus_per_actor, tasks=workers)
    with progress("segmenting") as on_progress:
        return predict_ray(inputs, model, output, opts, cluster, backend=backend, device=device, threads=threads,
                           compile=compile, on_progress=on_progress, log=say)  # fmt: skip
