"""``ultralbm-edge train`` and ``ultralbm-edge distill``: the paper's recipe, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL

from . import app
from ._common import check_device, fail, needs_torch, overwrite_option, progress


def _run(cfg) -> None:
    from ultralbm_edge.train import train

    with progress("training (batches)") as on_progress:
        result = train(cfg, log=typer.echo, on_progress=on_progress)
    if result["rank"] == 0:  # under torchrun the other processes end quietly
        typer.echo(f"done: best val loss {result['best_val_loss']:.4f}; best.pth, last.pth, metrics.csv in {result['out']}")


DEVICE_HELP = "cpu, cuda or cuda:N (several GPUs: torchrun --nproc-per-node N -m ultralbm_edge train ... --device cuda)."


def limit_option():
    return typer.Option(None, "--limit", min=1, help="Use only the first N images of each split (quick checks, benchmarks).")


def scan_option():
    return typer.Option("", "--scan", help="Scan strategy for training (default: chunked on the CPU, triton on CUDA); "
                                           "cuda: mamba_ssm's kernels, forward and backward.")  # fmt: skip


def cuda_graph_option():
    return typer.Option(True, "--cuda-graph/--no-cuda-graph",
                        help="Replay each training step as a recorded CUDA graph (one GPU, fp32): same arithmetic, less launch overhead.")  # fmt: skip


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., help="Folder with train/images, train/masks, val/images, val/masks."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (best.pth, last.pth, metrics.csv/json)."),
    variant: str = typer.Option(DEFAULT_MODEL, help="A registered model (`ultralbm-edge info --models` lists them)."),
    epochs: int = typer.Option(300, min=1, help="Epochs (paper: 300)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, max=1024, help="Batch size per process (paper: 8)."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate, > 0 (paper: 1e-3)."),
    device: str = typer.Option("cpu", callback=check_device, help=DEVICE_HELP),
    seed: int = typer.Option(42, help="Random seed."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision on CUDA."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT from its last.pth."),
    overwrite: bool = overwrite_option("an earlier run in OUTPUT (start over)"),
    stop_after_minutes: Optional[float] = typer.Option(None, min=0.0, help="End cleanly after the epoch that crosses this."),
    limit: Optional[int] = limit_option(),
    cuda_graph: bool = cuda_graph_option(),
    scan: str = scan_option(),
) -> None:
    """Train UltraLBM-UNet (or another registered model) with the paper's recipe (BCE+Dice, AdamW, cosine
    schedule, flips and rotations)."""
    needs_torch("train")
    from ultralbm_edge.train import TrainConfig

    if not (data / "train").is_dir():
        fail(f"{data}: expected train/ and val/ sub-folders (each with images/ and masks/)")
    _run(TrainConfig(str(data), str(output), variant, epochs, batch_size, lr, device=device, seed=seed, amp=amp,
                     resume=resume, overwrite=overwrite, stop_after_minutes=stop_after_minutes, limit=limit,
                     cuda_graph=cuda_graph, scan=scan))  # fmt: skip


@app.command("distill")
def distill_cmd(
    teacher: str = typer.Option(..., help="Teacher checkpoint (.pth or a bundled name)."),
    data: Path = typer.Option(..., help="Folder with train/ and val/ (images/, masks/)."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder for the UltraLBM-UNet-T student."),
    epochs: int = typer.Option(300, min=1, help="Epochs."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, max=1024, help="Batch size."),
    device: str = typer.Option("cpu", callback=check_device, help=DEVICE_HELP),
    seed: int = typer.Option(42, help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT from its last.pth."),
    overwrite: bool = overwrite_option("an earlier run in OUTPUT (start over)"),
    stop_after_minutes: Optional[float] = typer.Option(None, min=0.0, help="End cleanly after the epoch that crosses this."),
    limit: Optional[int] = limit_option(),
    cuda_graph: bool = cuda_graph_option(),
    scan: str = scan_option(),
) -> None:
    """Distill UltraLBM-UNet-T (0.5x channels) from a teacher with the hybrid loss of §3.6."""
    needs_torch("distill")
    from ultralbm_edge.runtime.model_files import resolve_model
    from ultralbm_edge.train import TrainConfig

    _run(TrainConfig(str(data), str(output), "ultralbm-t", epochs, batch_size, device=device, seed=seed, resume=resume,
                     overwrite=overwrite, teacher=str(resolve_model(teacher, "torch")), stop_after_minutes=stop_after_minutes,
                     limit=limit, cuda_graph=cuda_graph, scan=scan))  # fmt: skip
