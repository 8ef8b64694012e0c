"""Helpers shared by the command modules: one way to report a user error, progress, and the torch check."""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

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
