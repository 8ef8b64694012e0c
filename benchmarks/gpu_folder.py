"""Folder inference on a CUDA GPU: files on disk -> masks + results.csv on disk, against pure inference, one run.

For each image set and batch size, side by side in one process:
- ``pure``: ``backend.run`` on a preprocessed host batch (copies in and out included), and the graph alone on a batch
  already in GPU memory;
- ``gpu stages``: ``runtime.predict.predict`` with the GPU batch stages (decode in worker processes, handed over in
  shared memory registered as pinned memory and copied by DMA, the next batch queued on the GPU while the last one is
  handed over; preprocessing, resizing and thresholding on the GPU; ``gpu.batch_stages``) — what
  ``ultralbm-edge predict --device cuda`` runs;
- ``gpu stages, pageable``: the same stages with the slots left pageable (``max_pinned_bytes = 0``): the main process
  stacks the images and copies the outputs into the slots itself, one batch at a time (the code before pinning);
- ``cpu stages``: the same run with the CPU stages (numpy preprocessing and OpenCV resizing in threads), the path
  the GPU backend took before.
Each end-to-end number is images / wall seconds of a whole ``predict`` call over a fresh output folder, after one
untimed warm-up call (CUDA graphs captured, caches warm); the two GPU-stage forms run ``--repeats`` times in
alternation and their medians are reported. Masks of the two paths are compared image by image (Dice).

    python benchmarks/gpu_folder.py --checkpoint ultralbm --images <isic val images> --full-res <ph2 images> \
        --copies 20 --batches 64 --json gpu_folder_h200.json
    python benchmarks/gpu_folder.py --images <isic val images> --copies 100 --forms gpu --json gpu_folder_large_h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from _common import replicate
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.metrics import dice
from ultralbm_edge.runtime.predict import BatchStages, PredictOptions, predict


def pure_rates(backend, batch: int, iters: int = 50) -> tuple[float, float]:
    """Images/s of ``backend.run`` on a host batch (the issue's "pure inference": copies in and out included) and of
    the graph alone on a batch already on the GPU."""
    runner = backend._graphs
    host = np.random.default_rng(0).uniform(0, 255, (batch, 3, 256, 256)).astype(np.float32)
    device = runner.input_buffer(batch, (256, 256))
    rates = []
    for step in (lambda: backend.run(host), lambda: runner.run_device(device)):
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return rates[0], rates[1]


def run_folder(backend, folder: Path, opts: PredictOptions, stages: str, out: Path) -> tuple[float, float, float]:
    """Images/s of one predict call with ``stages`` ("gpu", "gpu pageable" or "cpu"), and how busy it kept the CPUs:
    the main process's CPU seconds per wall second (near 1.0: its one thread is the serial part) and the worker
    processes' CPU seconds per image (ms)."""
    original = backend.batch_stages
    if stages == "cpu":
        backend.batch_stages = lambda batch_size=8: BatchStages(backend)
    elif stages == "gpu pageable":

        def pageable(batch_size: int = 8):
            gpu = original(batch_size)
            gpu.max_pinned_bytes = 0
            return gpu

        backend.batch_stages = pageable
    try:
        before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        t0 = time.perf_counter()
        summary = predict([folder], backend, out, opts)
        seconds = time.perf_counter() - t0
        after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    finally:
        backend.batch_stages = original
    assert summary.ok == summary.total and not summary.failed, summary.failed[:3]
    main_cpu, workers_cpu = (a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
    return summary.ok / seconds, main_cpu / seconds, workers_cpu * 1e3 / summary.ok


def _median_run(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The run with the median images/s."""
    return sorted(runs)[len(runs) // 2]


def mask_agreement(a: Path, b: Path) -> dict[str, float]:
    dices = [dice(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0, cv2.imread(str(b / p.name), cv2.IMREAD_GRAYSCALE) > 0)
             for p in sorted(a.glob("*.png"))]  # fmt: skip
    return {"images": len(dices), "min_dice": float(min(dices)), "mean_dice": float(np.mean(dices))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="ultralbm")
    ap.add_argument("--images", type=Path, required=True, help="256-px JPEGs (ISIC 2017 val)")
    ap.add_argument("--full-res", type=Path, help="full-resolution JPEGs (PH2)")
    ap.add_argument("--copies", type=int, default=10, help="replicate each set this many times (a larger folder)")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each GPU-stage form (alternating); medians reported")
    ap.add_argument("--forms", default="gpu,gpu pageable,cpu", help="which end-to-end forms to run (a large folder: gpu alone)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    forms = [f.strip() for f in args.forms.split(",")]
    backend = open_backend(args.checkpoint, backend="torch", device="cuda", compile=args.compile)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {"isic 256 px": replicate(args.images, args.copies, tmp / "isic")}
        if args.full_res:
            sets["ph2 full res"] = replicate(args.full_res, max(1, args.copies // 4), tmp / "ph2")
        for batch in (int(b) for b in args.batches.split(",")):
            pure, graph_only = pure_rates(backend, batch)
            for name, folder in sets.items():
                n = len(list(folder.iterdir()))
                opts = PredictOptions(batch_size=batch, workers=args.workers, overwrite=True)
                run_folder(backend, folder, opts, "gpu", tmp / "warm")  # capture graphs, warm caches
                runs: dict[str, list[tuple[float, float, float]]] = {f: [] for f in ("gpu", "gpu pageable") if f in forms}
                for repeat in range(args.repeats):
                    for form in runs:  # each run into a fresh folder (masks created, not replaced)
                        runs[form].append(run_folder(backend, folder, opts, form, tmp / f"{form}_{batch}_{name}_{repeat}"))
                row = {"set": name, "images": n, "batch": batch, "workers": args.workers, "pure_img_s": round(pure, 1),
                       "graph_only_img_s": round(graph_only, 1)}  # fmt: skip
                if "gpu" in runs:
                    gpu, main_busy, worker_ms = _median_run(runs["gpu"])
                    row.update({"gpu_stages_img_s": round(gpu, 1), "gpu_stages_runs_img_s": [round(r[0], 1) for r in runs["gpu"]],
                                "gpu_stages_main_process_cpu_busy": round(main_busy, 3),
                                "gpu_stages_worker_cpu_ms_per_image": round(worker_ms, 3), "gpu_stages_over_pure": round(gpu / pure, 3)})  # fmt: skip
                if "gpu pageable" in runs:
                    pageable, pageable_busy, _ = _median_run(runs["gpu pageable"])
                    row.update({"gpu_stages_pageable_img_s": round(pageable, 1),
                                "gpu_stages_pageable_runs_img_s": [round(r[0], 1) for r in runs["gpu pageable"]],
                                "gpu_stages_pageable_main_process_cpu_busy": round(pageable_busy, 3)})  # fmt: skip
                    if "gpu" in runs:
                        row["gpu_stages_over_pageable"] = round(gpu / pageable, 3)
                if "cpu" in forms:
                    cpu = run_folder(backend, folder, opts, "cpu", tmp / f"cpu_{batch}_{name}")[0]
                    row.update({"cpu_stages_img_s": round(cpu, 1), "cpu_stages_over_pure": round(cpu / pure, 3)})
                    if "gpu" in runs:
                        agree = mask_agreement(tmp / f"gpu_{batch}_{name}_0" / "masks", tmp / f"cpu_{batch}_{name}" / "masks")
                        row.update({"mask_dice_gpu_vs_cpu_min": round(agree["min_dice"], 5), "mask_dice_gpu_vs_cpu_mean": round(agree["mean_dice"], 6)})
                rows.append(row)
                print(json.dumps(row), flush=True)
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cpus": os.cpu_count(), "compile": args.compile,
           "checkpoint": args.checkpoint}  # fmt: skip
    print(env)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
