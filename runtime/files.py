"""Writing files completely or not at all, and hashing them.

Every output of the toolkit (masks, CSV, ONNX, engines, checkpoints, JSON) goes through :func:`atomic_path`: the
bytes go to a temporary file beside the target, are flushed to the disk, and only then renamed over the target.
A run killed at any moment leaves the complete old file, the complete new one, or nothing — never a truncated one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

# Temporary files start with this prefix, so a later run can tell its own leftovers from user files.
TEMP_PREFIX = ".ulbm-tmp-"
# The stem is cut so that prefix + token + stem + suffix stays far below the 255-byte name limit.
_MAX_STEM_IN_TEMP = 40


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
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on a normal exit it is synced and renamed over
    ``path``, on an exception removed. Code inside may also verify the temporary file before it is committed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then commit it (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: Path | str, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))
