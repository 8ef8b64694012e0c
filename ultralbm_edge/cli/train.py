"""``ultralbm-edge train`` and ``ultralbm-edge distill``: the paper's recipe, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ultralbm_edge.assets import DEFAULT_MODEL

from . import app
from ._common import fail, needs_torch


def _run(cfg) -> None:
    from ultralbm_edge.runtime.dataset import DatasetError
    from ultralbm_edge.train import train

    try:
        result = train(cfg)
    except (DatasetError, RuntimeError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(f"done: best val loss {result['best_val_loss']:.4f}; best.pth, last.pth, metrics.csv in {result['out']}")


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., help="Folder with train/images, train/masks, val/images, val/masks."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (best.pth, last.pth, metrics.csv/json)."),
    variant: str = typer.Option(DEFAULT_MODEL, help="A registered model: ultralbm or ultralbm-t."),
    epochs: int = typer.Option(300, help="Epochs (paper: 300)."),
    batch_size: int = typer.Option(8, help="Batch size (paper: 8)."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate (paper: 1e-3)."),
    device: str = typer.Option("cpu", help="cpu or cuda (several GPUs: launch with torchrun)."),
    seed: int = typer.Option(42, help="Random seed."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision on CUDA."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT/last.pth."),
    stop_after_minutes: Optional[float] = typer.Option(None, help="End cleanly after the epoch that crosses this."),
) -> None:
    """Train UltraLBM-UNet with the paper's recipe (BCE+Dice, AdamW, cosine schedule, flips and rotations)."""
    needs_torch("train")
    from ultralbm_edge.train import TrainConfig

    if not (data / "train").is_dir():
        fail(f"{data}: expected train/ and val/ sub-folders (each with images/ and masks/)")
    _run(TrainConfig(str(data), str(output), variant, epochs, batch_size, lr, device=device, seed=seed, amp=amp,
                     resume=resume, stop_after_minutes=stop_after_minutes))  # fmt: skip


@app.command("distill")
def distill_cmd(
    teacher: str = typer.Option(..., help="Teacher checkpoint (.pth or a bundled name)."),
    data: Path = typer.Option(..., help="Folder with train/ and val/ (images/, masks/)."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder for the UltraLBM-UNet-T student."),
    epochs: int = typer.Option(300, help="Epochs."),
    batch_size: int = typer.Option(8, help="Batch size."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seed: int = typer.Option(42, help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT/last.pth."),
    stop_after_minutes: Optional[float] = typer.Option(None, help="End cleanly after the epoch that crosses this."),
) -> None:
    """Distill UltraLBM-UNet-T (0.5x channels) from a teacher with the hybrid loss of §3.6."""
    needs_torch("distill")
    from ultralbm_edge.runtime.model_files import ModelNotFound, resolve_model
    from ultralbm_edge.train import TrainConfig

    try:
        teacher_path = resolve_model(teacher)
    except ModelNotFound as e:
        fail(str(e))
    _run(TrainConfig(str(data), str(output), "ultralbm-t", epochs, batch_size, device=device, seed=seed, resume=resume,
                     teacher=str(teacher_path), stop_after_minutes=stop_after_minutes))  # fmt: skip
