"""Writing files completely or not at all, and hashing them.

Every output of the toolkit (masks, CSV, ONNX, engines, checkpoints, JSON) goes through :func:`atomic_path`: the
bytes go to a temporary file beside the target, are flushed to the disk, and only then renamed over the target
(masks, written by the thousand: :func:`write_bytes_atomic`, an unnamed file linked under its name once synced).
A run killed at any moment leaves the complete old file, the complete new one, or nothing — never a truncated one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import UserError

# Temporary files start with this prefix, so a later run can tell its own leftovers from user files.
TEMP_PREFIX = ".ulbm-tmp-"
# The stem is cut so that prefix + token + stem + suffix stays far below the 255-byte name limit.
_MAX_STEM_IN_TEMP = 40


class OutputError(UserError, ValueError):
    """An output cannot be written where asked (it exists, it is an input, its folder is missing or read-only)."""


class OutputWriteError(UserError, OSError):
    """An output could not be written (no space, read-only, no permission): the run stops, finished work stays."""


_WRITE_PROBLEMS = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "the disk quota is used up",
                   errno.EROFS: "the disk is read-only", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}  # fmt: skip


def write_failure(error: OSError, what: str) -> OutputWriteError:
    """One clear sentence for a failed write of ``what``, and what to do about it."""
    problem = _WRITE_PROBLEMS.get(error.errno or 0, error.strerror or str(error))
    return OutputWriteError(
        f"cannot write {what} ({problem}) — free space or fix the folder, then run the same command again: "
        "finished work is kept"
    )


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(path: Path | str, *, inputs: Iterable[Path | str] = (), overwrite: bool = False) -> Path:
    """The one rule every command applies to a file it is about to write: never one of its inputs (not even with
    ``--overwrite``), an existing file only with ``--overwrite``, and into a folder that exists."""
    path = Path(path)
    for source in inputs:
        if same_file(path, Path(source)):
            raise OutputError(f"{path}: is also an input of this command; writing it would destroy the input — choose another -o")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; name the output file (e.g. {path / 'model.onnx'})")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists — pass --overwrite to replace it, or choose another -o")
    if not path.parent.is_dir():
        raise OutputError(f"output directory {path.parent} does not exist — create it first or choose another -o")
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"output directory {path.parent} is not writable — choose another -o")
    return path


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files a killed run left in ``folder`` and its sub-folders (only ours: ``TEMP_PREFIX``)."""
    removed = 0
    for tmp in folder.rglob(f"{TEMP_PREFIX}*"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that keeps its suffix (writers such as cv2.imwrite pick the format
    from it)."""
    stem = path.stem[:_MAX_STEM_IN_TEMP]
    return path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{stem}{path.suffix}")


@contextmanager
def atomic_path(path: Path | str, sync_folder: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on a normal exit it is synced and renamed over
    ``path``, on an exception removed. Code inside may also verify the temporary file before it is committed.
    ``sync_folder=False`` leaves syncing the rename itself to the caller (once for many files): the content is synced
    before the rename either way, so a file under its final name is always complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        if sync_folder:
            sync_folder_entries(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync_folder_entries(folder: Path) -> None:
    """Make the names created or renamed in ``folder`` durable."""
    _fsync_path(folder, directory=True)


def write_atomic(path: Path | str, write: Callable[[Path], None], sync_folder: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then commit it (see :func:`atomic_path`)."""
    with atomic_path(path, sync_folder) as tmp:
        write(tmp)


def write_bytes_atomic(path: Path | str, data: bytes, sync_folder: bool = True) -> None:
    """``data`` as ``path``'s content, complete or not at all. Where the system offers it (Linux), a new file is
    written unnamed (``O_TMPFILE``) in its folder, synced, and only then linked under its name: one change to the
    folder instead of a temporary name's create and rename, which is what many processes writing masks into one
    folder wait for (1.86x the files/s of 16 processes on the H200 machine, median of 5 rounds:
    ``benchmarks/mask_writes.py``), and a killed run leaves no temporary file. Otherwise, and to replace an
    existing file, :func:`atomic_path`."""
    path = Path(path)
    if not _link_unnamed(path, data):
        write_atomic(path, lambda tmp: tmp.write_bytes(data), sync_folder)
    elif sync_folder:
        sync_folder_entries(path.parent)


_UNNAMED_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}  # a file system (or kernel) without O_TMPFILE
# (process id, its /proc/self/fd folder or None without /proc): a forked child opens its own
_proc_fd_of: tuple[int, int | None] | None = None


def _link_unnamed(path: Path, data: bytes) -> bool:
    """Write ``data`` to an unnamed file in ``path``'s folder, sync it and link it as ``path``; False (nothing
    written) where unnamed files cannot be made and named, or ``path`` exists."""
    if not hasattr(os, "O_TMPFILE") or os.path.lexists(path) or (proc_fd := _proc_fd()) is None:
        return False
    try:
        fd = _open_unnamed(path.parent)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_unnamed(path.parent)
    if fd is None:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N: the way to name an O_TMPFILE file without privileges
        os.link(str(fd), path, src_dir_fd=proc_fd, follow_symlinks=True)
    except FileExistsError:
        return False  # made meanwhile: replaced by a rename instead, the old file whole until the new one is
    finally:
        os.close(fd)
    return True


def _open_unnamed(folder: Path) -> int | None:
    """An unnamed file open for writing in ``folder``; None where the file system does not offer them."""
    try:
        return os.open(folder, os.O_WRONLY | os.O_TMPFILE, 0o666)
    except OSError as e:
        if e.errno in _UNNAMED_UNSUPPORTED:
            return None
        raise


def _proc_fd() -> int | None:
    global _proc_fd_of
    entry = _proc_fd_of  # one read: threads writing at once at worst each open one
    if entry is None or entry[0] != os.getpid():  # none yet, or the parent's (this is a forked child)
        try:
            fd: int | None = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            fd = None  # no /proc (some containers): named temporary files
        entry = _proc_fd_of = (os.getpid(), fd)
    return entry[1]


def write_text_atomic(path: Path | str, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))
