"""Table 1 of issue 20: the peers (UltraLight VM-UNet, ResMamba-ULite, DermoMamba) beside UltraLBM-UNet and -T,
each measured the same way in one run, with the numbers their papers report beside ours.

Columns:

- params: ``count_parameters`` of the registered model (equal to the official code's, tests/test_peers.py).
- GMACs at 256x256, batch 1: ``torch.utils.flop_counter.FlopCounterMode`` over one forward, divided by 2 (it
  counts a multiply-add as 2 FLOPs). It counts convolutions and matrix products (nn.Linear, the SS2D
  projections) and nothing else: no norms, activations, pooling, resizing, elementwise ops or the selective scan's
  recurrence. That is what the papers' "GFLOPs" (thop/fvcore-style, one multiply-add = one FLOP) count too.
  DermoMamba at 256x256 runs its network at 192x256 inside (models/dermomamba.py), so that is what is counted.
- DSC / IoU (%): one global confusion matrix at threshold 0.5 (``runtime.evaluate``, the paper's metric) on
  isic2017/val (600 images) and PH2 (all 150: ph2/train + ph2/val), PyTorch on the CPU. Only for models with
  trained weights (bundled, or ``--weights``); ResMamba-ULite and DermoMamba have none and print "not trained". A
  checkpoint whose provenance lists isic2017/val under ``trained_on`` (the shipped ``ultralbm`` and ``ultralbm-t``
  learnt from all 2000 images) is flagged there. The paper's PH2 is all 200 images, external, averaged over its
  models trained on ISIC 2017 and on ISIC 2018; ours is the 150 we hold, external to every model here.
- ORT CPU ms: the model exported by the toolkit (batch 1, 256x256, ``--scan auto``: the fastest exact form each
  network can take, parity-checked on one image) on ONNX Runtime's CPU provider, each model in a session of its
  own, one model after the other (see ``time_one``), median per model. The peers' weights are random (their speed
  does not depend on the values).
- GPU img/s at batch 256 (``ultralbm_edge.gpu.CudaGraphRunner``, fp32, Triton scan), median of 5 timings of 20
  replays each. The GPU and the CPU columns are measured on different machines, so each has its own run:
  ``--gpu-only`` on the GPU machine writes that column alone, and the CPU run reads it back (``--gpu-json``).

``--weights NAME=PATH`` scores a row with another checkpoint than the bundled one (the paper comparison uses the
runs trained on isic2017/train alone); the checkpoint's ``trained_on`` is printed in the row either way.

    python benchmarks/table1.py --gpu-only --json benchmarks/results/table1_gpu_h200.json      # on the GPU
    python benchmarks/table1.py --threads 2 --gpu-json benchmarks/results/table1_gpu_h200.json \
        --json benchmarks/results/table1_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import report

from ultralbm_edge.assets import SAMPLE_IMAGES
from ultralbm_edge.checkpoint import load_checkpoint, save_checkpoint
from ultralbm_edge.models import count_parameters, create_model
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ultralbm_edge.runtime.dataset import load_images
from ultralbm_edge.runtime.evaluate import evaluate
from ultralbm_edge.runtime.model_files import ModelNotFound, resolve_model

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("ultralight-vm-unet", "resmamba-ulite", "dermomamba", "ultralbm", "ultralbm-t")
# What each paper reports. Accuracy columns are from the UltraLBM-UNet paper's Table 1 (ISIC 2017 and PH2, mean of
# three seeds; UltraLight VM-UNet re-run there), the only table with all its rows on those datasets; ResMamba-ULite
# and DermoMamba report ISIC 2018 (and DermoMamba PH2 in figures not in our sources), not ISIC 2017.
PAPER: dict[str, dict[str, Any]] = {
    "ultralight-vm-unet": {"params_m": 0.049, "gflops": 0.060, "isic2017_dsc": 87.59, "isic2017_iou": 77.93,
                           "ph2_dsc": 90.89, "ph2_iou": 83.31,
                           "source": "own paper (Patterns 2025): 0.049 M, 0.060 GFLOPs; accuracy: UltraLBM-UNet Table 1 "
                                     "(re-run there, 0.045 M, 0.069 GFLOPs)"},
    "resmamba-ulite": {"params_m": 3.27, "gflops": 1.52,
                       "source": "own paper (MTAP 2025): 3.27 M, 1.52 GFLOPs; ISIC 2018 Dice 90.79 (no ISIC 2017, PH2)"},
    "dermomamba": {"params_m": "< 5", "gflops": "< 1",
                   "source": "own paper (PAA 2025): < 5 M params, < 1 GFLOPs; ISIC 2018 and PH2 in its tables"},
    "ultralbm": {"params_m": 0.034, "gflops": 0.060, "isic2017_dsc": 88.78, "isic2017_iou": 79.82, "ph2_dsc": 91.54,
                 "ph2_iou": 84.41, "source": "UltraLBM-UNet Table 1"},
    "ultralbm-t": {"params_m": 0.011, "gflops": 0.019, "isic2017_dsc": 88.00, "isic2017_iou": 78.57, "ph2_dsc": 91.85,
                   "ph2_iou": 84.92, "source": "UltraLBM-UNet Table 1"},
}  # fmt: skip


def gmacs(model: torch.nn.Module, size: int = 256) -> float:
    """Multiply-adds of convolutions and matrix products in one forward at batch 1 (see the module docstring)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, model.using_scan("blelloch"):  # the scan's recurrence has no matmul to count
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2 / 1e9


def trained_checkpoint(name: str, weights: dict[str, Path]) -> Path | None:
    if name in weights:
        return weights[name]
    try:
        return resolve_model(name, "torch")  # bundled weights
    except ModelNotFound:
        return None


def accuracy(checkpoint: Path, data: Path) -> dict[str, float]:
    """DSC and IoU (%) on isic2017/val and on all of PH2 (its train and val folders pooled into one confusion)."""
    backend = open_backend(checkpoint, backend="torch")
    isic = evaluate(backend, data / "isic2017" / "val")
    ph2 = [evaluate(backend, data / "ph2" / split)["confusion"] for split in ("train", "val")]
    tp, fp, fn = (sum(c[k] for c in ph2) for k in ("tp", "fp", "fn"))
    trained_on = load_checkpoint(checkpoint).provenance.get("trained_on", ["isic2017/train"])
    return {"checkpoint": str(checkpoint), "trained_on": trained_on, "isic2017_dsc": 100 * isic["dsc"], "isic2017_iou": 100 * isic["iou"],
            "isic2017_in_training": "isic2017/val" in trained_on,  # the shipped model learnt from all 2000 images
            "ph2_dsc": 100 * 2 * tp / (2 * tp + fp + fn), "ph2_iou": 100 * tp / (tp + fp + fn)}  # fmt: skip


def export_for_timing(name: str, folder: Path, weights: dict[str, Path]) -> tuple[Path, str]:
    from ultralbm_edge.export import export_onnx  # here, not above: the --gpu-only run needs no export tools

    source = trained_checkpoint(name, weights)
    if source is None:  # an untrained peer: its speed does not depend on the weights
        source = folder / f"{name}.pth"
        save_checkpoint(source, create_model(name), name)
    result = export_onnx(load_checkpoint(source), folder / f"{name}.onnx", batch=1, parity_count=1)
    print(f"{name}: exported in {result.seconds:.0f} s, scan {result.metadata.scan_strategy}, {result.nodes} nodes; "
          f"{result.parity.summary()}", flush=True)  # fmt: skip
    return result.path, result.metadata.scan_strategy


def time_one(path: Path, x: np.ndarray, threads: int, rounds: int, warmup: int, budget_s: float) -> list[float]:
    """Milliseconds of ``rounds`` runs of one model (fewer, at least 3, when they would take over ``budget_s``), in
    one ONNX Runtime session opened for it alone. Models are timed one after the other, not interleaved, so that
    another session's spinning thread pool or a large model's cache footprint does not enter a model's times."""
    backend = OnnxRuntimeBackend(path, threads=threads)
    for _ in range(warmup):
        backend.run(x)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < rounds and (len(times) < 3 or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        backend.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    del backend
    return times


def gpu_images_per_s(name: str, batch: int = 256, iters: int = 20, repeats: int = 5) -> float:
    """Forward passes of one CUDA graph at ``batch``, input already in the graph's buffer, synchronised: the median
    of ``repeats`` timings of ``iters`` replays."""
    from ultralbm_edge.gpu import CudaGraphRunner

    runner = CudaGraphRunner(create_model(name), precision="fp32", max_batch=batch, scan="triton")
    images = load_images(SAMPLE_IMAGES, 10, 256).images
    x = torch.from_numpy(np.concatenate([images] * (batch // len(images) + 1))[:batch]).cuda()
    for _ in range(3):
        runner.run_device(x)
    rates = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            runner.run_device(x)
        torch.cuda.synchronize()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return statistics.median(rates)


def gpu_column(names: list[str], json_path: Path | None) -> None:
    """The GPU column alone (``--gpu-only``), fp32 means fp32: TF32 off."""
    if not torch.cuda.is_available():
        raise SystemExit("--gpu-only needs a CUDA GPU")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for name in names:
        rows.append({"model": name, "gpu_images_per_s": gpu_images_per_s(name)})
        print(rows[-1], flush=True)
    report(rows, json_path, gpu=torch.cuda.get_device_name(), torch=torch.__version__, batch=256, precision="fp32, TF32 off")


def read_gpu_column(path: Path | None) -> tuple[dict[str, float], str]:
    if path is None:
        return {}, "none"
    measured = json.loads(path.read_text())
    return {r["model"]: r["gpu_images_per_s"] for r in measured["rows"]}, f"{measured['environment']['gpu']} ({path.name})"


def parse_weights(pairs: list[str]) -> dict[str, Path]:
    weights = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in ROWS or not Path(path).is_file():
            raise SystemExit(f"--weights {pair!r}: expected NAME=PATH with NAME one of {ROWS} and PATH a checkpoint file")
        weights[name] = Path(path)
    return weights


def markdown(rows: list[dict[str, Any]]) -> str:
    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else str(v)

    lines = ["| model | weights trained on | params (paper) | GMACs @256 (paper GFLOPs) | ISIC 2017 val DSC / IoU (paper) "
             "| PH2 DSC / IoU (paper) | ORT CPU ms, batch 1 (scan) | GPU img/s, batch 256 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        p = r["paper"]
        acc = {k: (f"{r[k + '_dsc']:.2f} / {r[k + '_iou']:.2f}" if r.get(k + "_dsc") is not None else "not trained") for k in ("isic2017", "ph2")}
        if r.get("isic2017_in_training"):
            acc["isic2017"] += ", **in its training data**"
        paper_acc = {k: (f"{p[k + '_dsc']:.2f} / {p[k + '_iou']:.2f}" if k + "_dsc" in p else "-") for k in ("isic2017", "ph2")}
        lines.append(
            f"| {r['model']} | {' + '.join(r.get('trained_on', ['-']))} "
            f"| {r['params']:,} ({num(p['params_m'], '.3g')} M) | {r['gmacs']:.3f} ({num(p['gflops'], '.3g')}) "
            f"| {acc['isic2017']} ({paper_acc['isic2017']}) | {acc['ph2']} ({paper_acc['ph2']}) "
            f"| {r['ort_cpu_ms_p50']:.1f} ({r['ort_scan']}) | {num(r['gpu_images_per_s'], '.0f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="holds isic2017/ and ph2/")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime and PyTorch CPU threads")
    ap.add_argument("--rounds", type=int, default=30, help="timed runs per model (batch 1)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=60.0, help="stop timing a model after this long (at least 3 runs)")
    ap.add_argument("--models", default=",".join(ROWS))
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=PATH", help="score NAME with this checkpoint")
    ap.add_argument("--gpu-only", action="store_true", help="measure the GPU column alone (on the GPU machine)")
    ap.add_argument("--gpu-json", type=Path, help="the GPU column, as written by a --gpu-only run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = args.models.split(",")
    if args.gpu_only:
        return gpu_column(names, args.json)
    torch.set_num_threads(args.threads)
    weights = parse_weights(args.weights)
    gpu, gpu_source = read_gpu_column(args.gpu_json)
    rows = []
    for name in names:
        model = create_model(name)
        row: dict[str, Any] = {"model": name, "params": count_parameters(model), "gmacs": gmacs(model)}
        checkpoint = trained_checkpoint(name, weights)
        row.update(accuracy(checkpoint, args.data) if checkpoint else {"accuracy": "not trained"})
        rows.append(row)
        print({k: v for k, v in row.items()}, flush=True)
    x = load_images(SAMPLE_IMAGES, 1, 256).images
    with tempfile.TemporaryDirectory() as tmp:
        exported = {name: export_for_timing(name, Path(tmp), weights) for name in names}
        paths, scans = {n: e[0] for n, e in exported.items()}, {n: e[1] for n, e in exported.items()}
        times = {name: time_one(path, x, args.threads, args.rounds, args.warmup, args.budget_s) for name, path in paths.items()}
    for row in rows:
        row["ort_cpu_ms_p50"] = statistics.median(times[row["model"]])
        row["ort_cpu_ms_all"] = [round(t, 2) for t in times[row["model"]]]  # every timed run, in order
        row["ort_scan"] = scans[row["model"]]
        row["gpu_images_per_s"] = gpu.get(row["model"], "not measured")
        row["paper"] = PAPER[row["model"]]
    table = markdown(rows)
    print(table)
    report(rows, args.json, threads=args.threads, rounds=args.rounds, torch=torch.__version__, markdown=table,
           gpu_column=gpu_source)  # fmt: skip


if __name__ == "__main__":
    main()
