"""Ways to write many small masks atomically into one folder, from many processes at once, side by side.

Folder prediction on a GPU writes thousands of masks a second from its worker processes into one ``masks/`` folder,
each one complete or not at all. A py-spy profile of the workers on the H200 put about a third of their time in the
file system (creating the temporary file, fsync, rename, the per-file mkdir), and 10 workers wrote as fast as 16:
something shared serialises them. This script times the ways to write a mask, each by ``--processes`` forked
processes into a fresh folder, alternating round by round (medians of files/s):

- ``named temporary``: ``runtime.files.write_atomic`` (mkdir of the folder, a named temporary file, a second open to
  fsync it, rename): how masks were written before;
- ``one open``: the folder made once, the temporary file created, written and fsynced through one descriptor, renamed;
- ``unnamed``: ``runtime.files.write_bytes_atomic``, how masks are written now: an unnamed file in the folder
  (``O_TMPFILE``), written and fsynced, then linked under its name (one change to the folder instead of a create and
  a rename; Linux);
- ``no fsync``: ``one open`` without the fsync: what the durability costs (not an option: a power cut could leave an
  empty mask under its final name).

The masks are the ground-truth masks of ISIC 2017 val (real bytes, about 1 KB each).

    python benchmarks/mask_writes.py --masks <isic2017/val/masks> --copies 20 --processes 16 --json mask_writes_h200.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from ultralbm_edge.runtime.files import TEMP_PREFIX, write_atomic, write_bytes_atomic


def _named_temporary(folder: Path, name: str, data: bytes) -> None:
    write_atomic(folder / name, lambda tmp: tmp.write_bytes(data), sync_folder=False)


def _one_open(folder: Path, name: str, data: bytes, sync: bool = True) -> None:
    tmp = folder / f"{TEMP_PREFIX}{os.getpid()}-{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / name)


def _unnamed(folder: Path, name: str, data: bytes) -> None:
    write_bytes_atomic(folder / name, data, sync_folder=False)


WAYS = {"named temporary": _named_temporary, "one open": _one_open, "unnamed": _unnamed, "no fsync": lambda f, n, d: _one_open(f, n, d, sync=False)}


def _write_share(args: tuple[str, str, list[tuple[str, bytes]]]) -> None:
    way, folder, files = args
    for name, data in files:
        WAYS[way](Path(folder), name, data)


def timed(way: str, folder: Path, files: list[tuple[str, bytes]], processes: int, pool) -> float:
    folder.mkdir(parents=True)
    shares = [(way, str(folder), files[k::processes]) for k in range(processes)]
    t0 = time.perf_counter()
    pool.map(_write_share, shares, chunksize=1)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # the names made durable once, as predict does on close
    os.fsync(fd)
    os.close(fd)
    rate = len(files) / (time.perf_counter() - t0)
    written = sorted(os.listdir(folder))
    assert written == sorted(name for name, _ in files), f"{way}: {len(written)} files"
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--masks", type=Path, required=True, help="PNG masks (ISIC 2017 val ground truth)")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--processes", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: a temporary folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    masks = [cv2.imencode(".png", cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))[1].tobytes() for p in sorted(args.masks.glob("*.png"))]
    files = [(f"{c}_{i}.png", data) for c in range(args.copies) for i, data in enumerate(masks)]
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(dir=args.out) as tmp, multiprocessing.get_context("fork").Pool(args.processes) as pool:
        for r in range(args.rounds):
            for way in WAYS:
                rates[way].append(timed(way, Path(tmp) / f"{r}_{way.replace(' ', '_')}", files, args.processes, pool))
    # Ratios round by round (the ways of one round ran back to back), then their median: the disk's speed drifts
    # between rounds far more than between the ways.
    rows = [{"way": way, "files_s_median": round(statistics.median(v), 1), "files_s_runs": [round(x, 1) for x in v],
             "over_named_temporary_median": round(statistics.median(x / y for x, y in zip(v, rates["named temporary"])), 3),
             "over_named_temporary_runs": [round(x / y, 3) for x, y in zip(v, rates["named temporary"])]} for way, v in rates.items()]  # fmt: skip
    for row in rows:
        print(json.dumps(row))
    env = {"files": len(files), "bytes_mean": round(float(np.mean([len(d) for _, d in files]))), "processes": args.processes,
           "cpus": os.cpu_count(), "rounds": args.rounds}  # fmt: skip
    print(env)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
