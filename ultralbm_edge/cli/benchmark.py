"""``ultralbm-edge benchmark MODEL...``: latency and throughput, several models side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL, SAMPLE_IMAGES

from . import app
from ._common import device_option, fail, overwrite_option, threads_option


@app.command()
def benchmark(
    models: List[str] = typer.Argument(None, help="Model files (.onnx, .engine, .pth) or bundled names (default: ultralbm)."),
    batch_sizes: str = typer.Option("1,8,32", help="Comma-separated batch sizes."),
    warmup: int = typer.Option(3, min=0, max=1000, help="Untimed runs per batch size."),
    runs: int = typer.Option(20, min=1, max=10000, help="Timed runs per batch size."),
    threads: Optional[int] = threads_option(),
    images: Optional[Path] = typer.Option(None, help="Real images to time with (default: the bundled samples)."),
    backend: str = typer.Option("auto", help="auto, onnxruntime, tensorrt or torch."),
    device: Optional[str] = device_option(),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    overwrite: bool = overwrite_option("an existing --json file"),
) -> None:
    """p50/p90/p99 latency and images/s per batch size, with preprocessing/postprocessing per image."""
    from rich.console import Console
    from rich.table import Table

    from ultralbm_edge.runtime.backends import BackendError, open_backend
    from ultralbm_edge.runtime.benchmark import benchmark_model, environment, to_json
    from ultralbm_edge.runtime.dataset import DatasetError, first_images
    from ultralbm_edge.runtime.files import check_output, write_text_atomic

    if json_path:
        check_output(json_path, overwrite=overwrite)

    try:
        sizes = sorted({int(b) for b in batch_sizes.split(",")})
    except ValueError:
        fail(f"--batch-sizes {batch_sizes!r}: expected comma-separated integers, e.g. 1,8,32")
    if not sizes or min(sizes) < 1 or runs < 1:
        fail("--batch-sizes and --runs must be positive")
    results = []
    try:
        paths = first_images(images or SAMPLE_IMAGES, max(sizes))
        for name in models or [DEFAULT_MODEL]:
            engine = open_backend(name, backend=backend, threads=threads, device=device)
            if engine.max_batch is not None and max(sizes) % engine.max_batch and engine.max_batch < max(sizes):
                typer.echo(f"note: {name} has a fixed batch of {engine.max_batch}; larger batches run as several calls", err=True)
            results.append(benchmark_model(name, engine, paths, sizes, warmup, runs))
    except (BackendError, DatasetError, FileNotFoundError) as e:
        fail(str(e))
    table = Table(title="ultralbm-edge benchmark (latency of inference on a preprocessed batch)")
    for col in ("model", "backend", "batch", "p50 ms", "p90 ms", "p99 ms", "ms/image", "images/s", "pre ms/img", "post ms/img"):
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for r in results:
        for b in r.batches:
            table.add_row(
                r.model, r.backend["backend"], str(b.batch), f"{b.p50_ms:.2f}", f"{b.p90_ms:.2f}", f"{b.p99_ms:.2f}",
                f"{b.per_image_ms:.2f}", f"{b.images_per_s:.1f}", f"{r.preprocess_ms:.2f}", f"{r.postprocess_ms:.2f}",
            )  # fmt: skip
    console = Console(width=140)
    console.print(table)
    env = environment()
    console.print(
        f"{env['cpu']} · Python {env['python']} · onnxruntime {env['onnxruntime']} · OpenCV {env['opencv']} · "
        f"peak RSS {env['peak_rss_mb']} MB · {len(paths)} real images from {images or 'the bundled samples'}"
    )
    if json_path:
        write_text_atomic(json_path, json.dumps(to_json(results), indent=2) + "\n")
