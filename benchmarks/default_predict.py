"""Issue 15's before/after: `ultralbm-edge predict FOLDER` with no -m, then and now, on the same folders in one run.

Before (5d27715) the default model was the bundled checkpoint run through PyTorch; now it is the bundled ONNX file on
ONNX Runtime (PyTorch only when a CUDA GPU makes it the fast path). "before" is that commit's own package (built
from its source with `git archive`, installed beside this one) with no -m; "after" is this checkout with no -m. Each
is timed as a whole process (start-up, model load, decode, inference, writes). The runs alternate (before, after,
before, ...) so a load change on a shared machine hits both; the median wall time per folder size is reported with
the ratio. Masks of the two runs are compared image by image.

    python benchmarks/default_predict.py --images ../shared/data/isic2017/val/images --sizes 48,600 --repeats 2 \
        --json benchmarks/results/default_predict_cpu.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import baseline_package, report
from ultralbm_edge.runtime.metrics import dice


def _timed_predict(images: Path, out: Path, site: Path | None) -> float:
    """Seconds of `ultralbm-edge predict IMAGES -o OUT` with the default model; ``site``: run that package instead."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if site is not None:
        env["PYTHONPATH"] = str(site)  # ahead of this checkout's editable install on sys.path
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ultralbm_edge", "predict", str(images), "-o", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - t0


def _masks_dice(a: Path, b: Path) -> float:
    scores = []
    for mask in sorted((a / "masks").glob("*.png")):
        x, y = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), cv2.imread(str(b / "masks" / mask.name), cv2.IMREAD_GRAYSCALE)
        scores.append(dice(x > 0, y > 0))
    return float(np.min(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--sizes", default="48,600")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", default="5d27715", help="the commit whose default is 'before'")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = {f"before: {args.before} default": baseline_package(args.before, Path(tmp) / "before"),
                    "after: this default": None}  # fmt: skip
        for n in (int(s) for s in args.sizes.split(",")):
            folder = Path(tmp) / f"in{n}"
            folder.mkdir()
            for p in sorted(args.images.glob("*.jpg"))[:n]:
                shutil.copy(p, folder / p.name)
            times: dict[str, list[float]] = {name: [] for name in variants}
            for r in range(args.repeats):
                for name, site in variants.items():
                    times[name].append(_timed_predict(folder, Path(tmp) / f"out{n}-{r}-{name[:5]}", site))
            before, after = (statistics.median(t) for t in times.values())
            outs = [Path(tmp) / f"out{n}-0-{name[:5]}" for name in variants]
            row = {"images": n, **{f"{name} s": round(statistics.median(t), 2) for name, t in times.items()},
                   "before/after": round(before / after, 2), "min mask Dice before vs after": round(_masks_dice(*outs), 5)}  # fmt: skip
            print(row, flush=True)
            rows.append(row)
    report(rows, args.json, repeats=args.repeats, before=args.before)


if __name__ == "__main__":
    main()
