"""Mask cleaning (``runtime.postprocess.clean_mask``: specks dropped, holes filled) before and after a change, side
by side on the masks the model really makes.

The bundled model's probability maps of isic2017/val (256 px) and PH2 (full resolution) are resized and thresholded
once, as ``predict`` does; then the ``--before`` commit's ``runtime/postprocess.py`` and this one clean every mask,
alternating round by round on one thread. Each row: median microseconds per mask of each, the per-round ratio
(median and quartiles), how many masks have several components (the only ones cleaning changes), and whether every
cleaned mask is identical.

    python benchmarks/mask_cleaning.py --before f809ab3 --json benchmarks/results/mask_cleaning_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import report
from ultralbm_edge.runtime import postprocess
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.imageio import read_image
from ultralbm_edge.runtime.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]


def raw_masks(backend, images: list[Path], threshold: float) -> list[np.ndarray]:
    """The thresholded 0/1 masks at each image's size, before cleaning (what ``predict`` hands to ``clean_mask``)."""
    masks = []
    for path in images:
        rgb = read_image(path)
        prob = backend.run(preprocess(rgb, backend.metadata.image_size)[None])[0, 0]
        masks.append((postprocess.full_size(prob, *rgb.shape[:2]) >= threshold).astype(np.uint8))
    return masks


def module_at(commit: str, relative: str, folder: Path):
    """``relative`` (a self-contained module) as it was at ``commit``, imported under a name of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{relative}"], check=True, capture_output=True).stdout
    path = folder / f"before_{Path(relative).name}"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(clean, masks: list[np.ndarray], opts) -> tuple[float, list[np.ndarray]]:
    t0 = time.perf_counter()
    out = [clean(m, opts) for m in masks]
    return (time.perf_counter() - t0) / len(masks) * 1e6, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="commit whose runtime/postprocess.py is the baseline")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="holds isic2017/ and ph2/")
    ap.add_argument("--model", default="ultralbm")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    backend = open_backend(args.model, threads=2)
    sets = {"isic2017/val (256 px)": sorted((args.data / "isic2017" / "val" / "images").glob("*.jpg")),
            "ph2 (full resolution)": sorted((args.data / "ph2").glob("*/images/*.jpg"))}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        before = module_at(args.before, "runtime/postprocess.py", Path(tmp))
        opts = postprocess.PostprocessOptions(backend.metadata.threshold)
        for name, images in sets.items():
            masks = raw_masks(backend, images, opts.threshold)
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                t_before, out_before = timed(before.clean_mask, masks, before.PostprocessOptions(opts.threshold))
                t_after, out_after = timed(postprocess.clean_mask, masks, opts)
                times["before"].append(t_before)
                times["after"].append(t_after)
            ratios = np.array(times["before"]) / np.array(times["after"])
            row = {"set": name, "masks": len(masks),
                   "several_components": sum(cv2.connectedComponents(m, connectivity=8)[0] > 2 for m in masks),
                   "before_us_per_mask": round(float(np.median(times["before"])), 1),
                   "after_us_per_mask": round(float(np.median(times["after"])), 1),
                   "before_over_after_median": round(float(np.median(ratios)), 3),
                   "before_over_after_q25_q75": [round(float(q), 3) for q in np.quantile(ratios, [0.25, 0.75])],
                   "identical_masks": sum(np.array_equal(a, b) for a, b in zip(out_before, out_after))}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    report(rows, args.json, before=args.before, rounds=args.rounds, threads=1, model=args.model)


if __name__ == "__main__":
    main()
