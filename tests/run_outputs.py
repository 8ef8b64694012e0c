"""Comparing two predict output folders: the same results.csv rows (timings aside) and byte-identical files."""

from __future__ import annotations

import csv
from pathlib import Path

TIMING = {"decode_ms", "infer_ms", "post_ms"}


def rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return {r["path"]: {k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)}


def assert_same_outputs(a: Path, b: Path, subfolders: list[str], count: int) -> None:
    """``a`` and ``b`` hold the same rows and, in each of ``subfolders``, the same ``count`` files byte for byte."""
    assert rows(a) == rows(b)
    for sub in subfolders:
        names = sorted(p.name for p in (a / sub).iterdir())
        assert len(names) == count and names == sorted(p.name for p in (b / sub).iterdir()), sub
        for name in names:
            assert (a / sub / name).read_bytes() == (b / sub / name).read_bytes(), f"{sub}/{name}"
