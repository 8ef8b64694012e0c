"""The ``ultralbm-edge`` command line: a thin layer over the library API.

Each command lives in its own module and imports heavy libraries (torch, onnx, tensorrt) only when it runs, so
``ultralbm-edge predict`` on a device never imports torch.
"""

from __future__ import annotations

import typer

from ultralbm_edge import __version__

app = typer.Typer(
    name="ultralbm-edge",
    help="UltraLBM-UNet skin-lesion segmentation: export, engines, batch inference, benchmarking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ultralbm-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """UltraLBM-UNet skin-lesion segmentation: export, engines, batch inference, benchmarking."""


# Command modules register themselves on ``app`` when imported.
from . import benchmark, demo, engine, evaluate, export, info, predict, train  # noqa: E402,F401


def main() -> None:
    app()
