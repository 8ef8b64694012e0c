"""``ultralbm-edge predict INPUT...``: batch mask inference over files and folders."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL

from . import app
from ._common import (
    batch_size_option,
    device_option,
    fail,
    interactive,
    progress_reporter,
    threads_option,
    workers_option,
)


@app.command()
def predict(
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="A .onnx, .engine or .pth file, or a bundled name."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (masks/, probs/, overlays/, results.csv)."),
    threshold: Optional[float] = typer.Option(None, help="Mask threshold (default: the model's, 0.5)."),
    save_probs: bool = typer.Option(False, "--save-probs", help="Also write probs/<stem>.npy (float32 model output)."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write overlays/<stem>.jpg (contour on the image)."),
    keep_largest: bool = typer.Option(True, "--keep-largest/--no-keep-largest", help="Keep only the largest lesion."),
    fill_holes: bool = typer.Option(True, "--fill-holes/--no-fill-holes", help="Fill holes inside the lesion."),
    batch_size: int = batch_size_option(),
    workers: int = workers_option(),
    backend: str = typer.Option("auto", help="auto, onnxruntime, tensorrt or torch."),
    device: Optional[str] = device_option(),
    threads: Optional[int] = threads_option(),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo every image, also with other settings (default: resume, skipping finished images)."
    ),
    max_megapixels: float = typer.Option(100.0, min=0.01, help="Refuse images declaring more pixels (decompression bombs)."),
    max_file_mb: float = typer.Option(100.0, min=0.1, help="Refuse image files larger than this."),
) -> None:
    """Segment lesions in dermoscopy images; exit 0 if all succeeded, 1 if some inputs failed, 2 on usage errors."""
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.imageio import ImageLimits
    from ultralbm_edge.runtime.predict import PredictOptions, iter_failures
    from ultralbm_edge.runtime.predict import predict as run_predict

    if threshold is not None and not 0.0 < threshold < 1.0:
        fail(f"--threshold {threshold} must be between 0 and 1")
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        fail(f"input not found: {', '.join(missing)}")
    engine = open_backend(model, backend=backend, threads=threads, device=device)
    opts = PredictOptions(threshold, save_probs, overlay, keep_largest, fill_holes, batch_size, workers, overwrite,
                          ImageLimits(max_megapixels, max_file_mb))  # fmt: skip
    bar, on_progress = progress_reporter(interactive())
    if bar:
        with bar:
            summary = run_predict(inputs, engine, output, opts, on_progress)
    else:
        summary = run_predict(inputs, engine, output, opts)
    if summary.total == 0:
        fail(f"no images found in {', '.join(map(str, inputs))} (looked for .jpg .jpeg .png .bmp .tif .tiff)")
    typer.echo(
        f"{summary.ok} segmented, {summary.skipped} already done, {len(summary.failed)} failed "
        f"in {summary.seconds:.1f} s with {engine.name} -> {summary.out_dir} (results.csv)"
    )
    for line in iter_failures(summary):
        typer.secho(f"  failed: {line}", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(summary.exit_code)
