"""``ultralbm-edge benchmark -m MODEL [-m MODEL...]``: latency and throughput, several models side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL, SAMPLE_IMAGES

from . import app
from ._common import check_outputs, device_option, fail, overwrite_option, progress, say, threads_option, write_result


@app.command()
def benchmark(
    models: Optional[List[str]] = typer.Option(
        None, "--model", "-m", help="A .onnx, .xml, .tflite, .engine or .pth file or a bundled name; repeat for side by side (default: ultralbm)."
    ),
    batch_sizes: str = typer.Option("1,8,32", help="Comma-separated batch sizes."),
    warmup: int = typer.Option(3, min=0, max=1000, help="Untimed runs per batch size."),
    runs: int = typer.Option(20, min=1, max=10000, help="Timed runs per batch size."),
    threads: Optional[int] = threads_option(),
    images: Optional[Path] = typer.Option(None, help="Real images to time with (default: the bundled samples)."),
    backend: str = typer.Option(
        "auto", help="auto (from each file's suffix), or one or more of onnxruntime, openvino, litert, tensorrt, torch, comma-separated: "
        "one row per model and backend (e.g. an .onnx file on onnxruntime,openvino)."
    ),
    device: Optional[str] = device_option(),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here ('-': standard output)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one row per model and batch size as CSV here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a latency plot (PNG) here (needs the [report] extra)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML report (table and plot) here."),
    overwrite: bool = overwrite_option("existing result files"),
) -> None:
    """p50/p90/p99 latency and images/s per batch size, with preprocessing/postprocessing per image."""
    from rich.console import Console
    from rich.table import Table

    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.benchmark import benchmark_model, environment, latency_plot, to_csv, to_json, to_rows
    from ultralbm_edge.runtime.dataset import first_images
    from ultralbm_edge.runtime.files import write_bytes_atomic
    from ultralbm_edge.runtime.report import write_report

    try:
        sizes = sorted({int(b) for b in batch_sizes.split(",")})
    except ValueError:
        fail(f"--batch-sizes {batch_sizes!r}: expected comma-separated integers, e.g. 1,8,32")
    if not sizes or min(sizes) < 1 or max(sizes) > 4096:
        fail(f"--batch-sizes {batch_sizes!r}: each must be between 1 and 4096")
    check_outputs(json_path, csv_path, plot, report, overwrite=overwrite)
    results = []
    paths = first_images(images or SAMPLE_IMAGES, max(sizes))
    for name in models or [DEFAULT_MODEL]:
        for which in backend.split(","):
            engine = open_backend(name, backend=which.strip(), threads=threads, device=device)
            if engine.max_batch is not None and engine.max_batch < max(sizes):
                say(f"note: {name} takes at most {engine.max_batch} images per call; larger batches run as several calls")
            with progress(f"timing {name} on {engine.name}") as on_progress:
                results.append(benchmark_model(name, engine, paths, sizes, warmup, runs, on_progress))
    env = environment()
    if json_path is not None and str(json_path) == "-":  # machine-readable output only
        write_result(json_path, json.dumps(to_json(results), indent=2) + "\n", overwrite)
        return
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
    threads_used = ", ".join(sorted({r.backend.get("threads", "?") for r in results}))
    console.print(
        f"{env['cpu']} ({env['cpu_threads']} hardware threads; inference threads {threads_used}) · Python {env['python']} · "
        f"onnxruntime {env['onnxruntime']} · OpenCV {env['opencv']} · peak RSS {env['peak_rss_mb']} MB · "
        f"{len(paths)} real images from {images or 'the bundled samples'}"
    )
    if json_path:
        write_result(json_path, json.dumps(to_json(results), indent=2) + "\n", overwrite)
    if csv_path:
        write_result(csv_path, to_csv(results), overwrite)
    png = latency_plot(results) if plot or report else None
    if plot:
        write_bytes_atomic(plot, png)
        say(f"wrote {plot}")
    if report:
        summary = [{k: env[k] for k in ("cpu", "cpu_threads", "onnxruntime", "opencv", "python", "peak_rss_mb")}]
        write_report(report, "ultralbm-edge benchmark", f"{len(results)} model(s), batch sizes {sizes}", summary,
                     table=to_rows(results), table_heading="Latency per model and batch size", plot_png=png)  # fmt: skip
        typer.echo(f"report: {report}")
