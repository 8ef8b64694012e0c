"""Helpers shared by the command modules: one way to report a user error, progress, and the torch check."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Optional

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


class Verbosity:
    """-q (0): results and errors only; default (1): progress too; -v (2): the libraries' own logs as well."""

    level = 1


def say(message: str) -> None:
    """A line of progress or context (not a result): on stderr, so that stdout stays parseable; silent with -q."""
    if Verbosity.level > 0:
        typer.echo(message, err=True)


# When stderr is not a terminal (CI, nohup, a pipe), progress is a plain line this often.
PLAIN_PROGRESS_EVERY_S = 10.0


@contextmanager
def progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback ``(done, total)``: a rich bar on a terminal, a plain line every few seconds otherwise
    (and a last one at the end), nothing with -q."""
    if Verbosity.level == 0:
        yield lambda done, total: None
        return
    if interactive():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=_stderr_console())  # fmt: skip
        task = bar.add_task(description, total=None)
        with bar:
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    started = last = time.monotonic()
    state = {"done": 0, "total": 0}

    def plain(done: int, total: int) -> None:
        nonlocal last
        state.update(done=done, total=total)
        if time.monotonic() - last >= PLAIN_PROGRESS_EVERY_S:
            last = time.monotonic()
            say(f"{description}: {done}/{total} after {last - started:.0f} s")

    yield plain
    if state["total"]:
        say(f"{description}: {state['done']}/{state['total']} in {time.monotonic() - started:.1f} s")


@contextmanager
def status(description: str) -> Iterator[None]:
    """A step without a count (tracing, an engine build): a spinner on a terminal, one line otherwise."""
    if Verbosity.level > 0 and interactive():
        with _stderr_console().status(description):
            yield
        return
    say(f"{description} ...")
    yield


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


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


def tta_option() -> Any:
    return typer.Option(
        False, "--tta/--no-tta",
        help="Test-time augmentation: average the probabilities of each image and its 3 mirror images before the "
        "threshold (4x the inference; gain measured in the model card).",
    )


def model_option(help_text: str = "A .onnx, .xml, .tflite, .engine or .pth file, or a bundled name (default: the bundled model).") -> Any:
    from ultralbm_edge.assets import DEFAULT_MODEL

    return typer.Option(DEFAULT_MODEL, "--model", "-m", help=help_text)


def check_outputs(*paths: Optional[Path], overwrite: bool) -> None:
    """Apply the output rule to every file a command will write, before it starts working."""
    from ultralbm_edge.runtime.files import check_output

    for path in paths:
        if path is not None and str(path) != "-":
            check_output(path, overwrite=overwrite)


def write_result(path: Path, text: str, overwrite: bool) -> None:
    """A result file (JSON, CSV) under the output rule, or standard output for ``-``."""
    from ultralbm_edge.runtime.files import check_output, write_text_atomic

    if str(path) == "-":
        sys.stdout.write(text)
        return
    check_output(path, overwrite=overwrite)
    write_text_atomic(path, text)
    say(f"wrote {path}")
