"""``ultralbm-edge info MODEL``: what a checkpoint, ONNX file or engine holds."""

from __future__ import annotations

import typer

from ultralbm_edge.assets import DEFAULT_MODEL

from . import app
from ._common import fail, needs_torch


def _list_models() -> None:
    needs_torch("info --models")
    from ultralbm_edge.models import count_parameters, create_model, list_models, model_spec
    from ultralbm_edge.runtime.model_files import bundled_models

    shipped = bundled_models()
    for name in list_models():
        spec = model_spec(name)
        typer.echo(f"{name:<20}{count_parameters(create_model(name)):>11,} parameters  {spec.description}")
        typer.echo(f"{'':<20}paper: {spec.paper}")
        weights = f"trained weights bundled (-m {name})" if name in shipped else f"no weights bundled (train --variant {name})"
        typer.echo(f"{'':<20}{weights}")


@app.command()
def info(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="A .pth, .onnx or .engine file, or a bundled name."),
    models: bool = typer.Option(False, "--models", help="List the registered models (what --variant accepts) instead."),
) -> None:
    """Show a model file's variant, metadata, hash (and for checkpoints the parameter count and provenance)."""
    if models:
        _list_models()
        return
    from ultralbm_edge.runtime.formats import UnknownFormat, format_for
    from ultralbm_edge.runtime.model_files import ModelNotFound, resolve_model
    from ultralbm_edge.runtime.model_info import deployed_model_info

    try:
        path = resolve_model(model)
        kind = format_for(path).name
    except (ModelNotFound, UnknownFormat) as e:
        fail(str(e))
    if kind != "torch":
        try:
            facts = deployed_model_info(path)
        except (OSError, ValueError, KeyError) as e:
            fail(f"{path}: cannot read its metadata ({type(e).__name__}: {e})")
        for key, value in facts.items():
            typer.echo(f"{key:<26}{value}")
        return
    needs_torch("info on a .pth checkpoint")
    from ultralbm_edge.checkpoint import CheckpointError, load_checkpoint
    from ultralbm_edge.models import count_parameters

    try:
        ckpt = load_checkpoint(path)
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
