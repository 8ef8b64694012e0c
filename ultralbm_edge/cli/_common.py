"""Helpers shared by the command modules: one way to report a user error, progress, and the torch check."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn, Optional

import typer

EXIT_USAGE = 2
TORCH_EXTRA = "pip install 'ultralbm-edge[torch]'"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one clear error line to stderr and exit (2 = usage/input error)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def needs_torch(command: str) -> None:
    """Commands that build or train models need PyTorch; on a device install say so in one line (exit 2).
    (They import it right after anyway, so trying the import here costs nothing.)"""
    try:
        import torch  # noqa: F401
    except ImportError:
        fail(f"`ultralbm-edge {command}` needs PyTorch, which is not installed — {TORCH_EXTRA}")


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress_reporter(enabled: bool, description: str = "segmenting"):
    """A rich progress bar on an interactive terminal; nothing in CI or when piped."""
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
    task = bar.add_task(description, total=None)
    on_progress: Callable[[int, int], None] = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
    return bar, on_progress


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


CPUS = _usable_cpus()


def check_device(value: Optional[str]) -> Optional[str]:
    from ultralbm_edge.runtime.backends.base import BackendError, parse_device

    if value is not None:
        try:
            parse_device(value)
        except BackendError as e:
            raise typer.BadParameter(str(e)) from None
    return value


# The options every command spells the same way, with their bounds (checked before anything runs).
def device_option() -> Any:
    return typer.Option(None, "--device", callback=check_device, help="cpu, cuda or cuda:N (default: cpu).")


def threads_option() -> Any:
    return typer.Option(None, "--threads", min=1, max=CPUS, help=f"Inference threads, 1-{CPUS} (default: the runtime's).")


def batch_size_option(default: int = 8) -> Any:
    return typer.Option(default, "--batch-size", "-b", min=1, max=1024, help="Images per inference batch, 1-1024.")


def workers_option() -> Any:
    return typer.Option(2, "--workers", min=1, max=64, help="Threads decoding, preprocessing and writing, 1-64.")


def overwrite_option(what: str = "an existing output") -> Any:
    return typer.Option(False, "--overwrite", help=f"Replace {what} (never an input of the command).")
