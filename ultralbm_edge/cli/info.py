"""``ultralbm-edge info CHECKPOINT``: what a checkpoint holds."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from ._common import fail


@app.command()
def info(checkpoint: Path = typer.Argument(..., help="A .pth checkpoint (the authors' formats or ours).")) -> None:
    """Show a checkpoint's variant, channels, parameter count, source format and hash."""
    from ultralbm_edge.checkpoint import CheckpointError, load_checkpoint
    from ultralbm_edge.models import count_parameters

    try:
        ckpt = load_checkpoint(checkpoint)
    except CheckpointError as e:
        fail(str(e))
    typer.echo(f"file          {ckpt.path}")
    typer.echo(f"sha256        {ckpt.sha256}")
    typer.echo(f"format        {ckpt.source_format}")
    typer.echo(f"variant       {ckpt.variant}")
    typer.echo(f"channels      {ckpt.channels}")
    typer.echo(f"parameters    {count_parameters(ckpt.model):,}")
    typer.echo(f"image size    {ckpt.image_size}")
    typer.echo(f"threshold     {ckpt.threshold}")
    typer.echo(f"preprocessing {ckpt.preprocessing}")
    if ckpt.provenance:
        typer.echo(f"provenance    {ckpt.provenance}")
