"""The ``ultralbm-edge`` command line: a thin layer over the library API.

Each command lives in its own module and imports heavy libraries (torch, onnx, tensorrt) only when it runs, so
``ultralbm-edge predict`` on a device never imports torch.
"""

from __future__ import annotations

from typing import NoReturn

import typer

from ultralbm_edge import __version__

from ._common import EXIT_USAGE, Verbosity

app = typer.Typer(
    name="ultralbm-edge",
    help="UltraLBM-UNet skin-lesion segmentation: export, engines, batch inference, benchmarking.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ultralbm-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print results and errors only (no progress)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show ONNX Runtime's and TensorRT's own logs."),
) -> None:
    """UltraLBM-UNet skin-lesion segmentation: export, engines, batch inference, benchmarking."""
    from ultralbm_edge.runtime.verbosity import set_verbose

    Verbosity.level = 0 if quiet else 2 if verbose else 1
    set_verbose(verbose)


# Command modules register themselves on ``app`` when imported.
from . import benchmark, demo, engine, evaluate, export, info, predict, train  # noqa: E402,F401


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Run the command line. Every error a user can cause ends in one line on stderr and exit code 2 (usage errors,
    bad files, refused requests, a full or read-only disk); Ctrl-C ends with 130; anything else is a bug and says
    so in one line (``ULTRALBM_DEBUG=1`` shows the traceback)."""
    import os
    import sys

    from typer.exceptions import Abort, TyperException

    from ultralbm_edge.runtime.errors import UserError

    def stop(message: str, code: int) -> NoReturn:
        typer.secho(f"error: {_one_line(message)}", err=True, fg=typer.colors.RED)
        sys.exit(code)

    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args or ["--help"], standalone_mode=False)
    except TyperException as e:  # usage errors: unknown option, missing argument, value out of range
        ctx = getattr(e, "ctx", None)
        command = f" {ctx.info_name}" if ctx is not None and ctx.parent is not None else ""
        stop(f"{e.format_message()} (see `ultralbm-edge{command} --help`)", EXIT_USAGE)
    except (Abort, KeyboardInterrupt):
        stop("interrupted — finished outputs are kept; run the same command again to resume", 130)
    except UserError as e:
        stop(str(e), EXIT_USAGE)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        stop(f"{where}{e.strerror or e} — check the disk and the path, then run the command again", EXIT_USAGE)
    except Exception as e:
        if os.environ.get("ULTRALBM_DEBUG"):
            raise
        stop(f"internal error {type(e).__name__}: {e} — please report it; ULTRALBM_DEBUG=1 shows the traceback", 3)
    sys.exit(code if isinstance(code, int) else 0)
