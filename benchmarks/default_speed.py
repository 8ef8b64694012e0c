"""The default export against the previous default, side by side on ONNX Runtime CPU, at batch 1 and 8.

"new" is today's `ultralbm-edge export` output (``portable``, the lean export graph of ``export.lean_forward``) as
the ONNX Runtime backend opens it: its scans swapped to LinearAttention at load time on onnxruntime >= 1.25.1; "new,
stock graph" is the same file with the swap off (what onnxruntime 1.17-1.25.0 and OpenVINO run); "new, reference
graph" is today's export traced from the model's own modules (the lean graph's lever alone). "old" is the default export of an earlier commit
(``--baseline``, by default 4f54ecf: ``linear_attention``), built from that commit's source with `git archive`.
All candidates run in one process, interleaved round by round; ratios are old/candidate per round (> 1: faster
than the old default), reported as the median over rounds. Parity is against PyTorch (sequential scan) on real
images.

    python benchmarks/default_speed.py --threads 2 --rounds 30 --json benchmarks/results/default_speed_cpu.json
    python benchmarks/default_speed.py --threads 1 --rounds 30 --json benchmarks/results/default_speed_cpu_t1.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _common import baseline_package, report
from ultralbm_edge.export import export_onnx, onnx_export, reference_probs
from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ultralbm_edge.runtime.imageio import find_images, read_image
from ultralbm_edge.runtime.model_files import resolve_model
from ultralbm_edge.runtime.parity import compare
from ultralbm_edge.runtime.preprocess import preprocess

from ultralbm_edge.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def export_baseline(site: Path, out: Path, batch: int) -> str:
    """The baseline's default export (its own code, its own parity gate); returns its scan form."""
    code = (
        "from ultralbm_edge.export import export_onnx\n"
        f"r = export_onnx('ultralbm', {str(out)!r}, batch={batch})\n"
        "print(r.metadata.scan_strategy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], check=False, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, cwd=str(site.parent))  # fmt: skip
    if res.returncode:
        raise SystemExit(f"baseline export failed:\n{res.stderr[-3000:]}")
    return res.stdout.split()[-1]


@contextmanager
def _reference_graph():
    """Exports trace the model's own modules instead of the lean export graph (``export.lean_forward``)."""
    original = onnx_export.export_forward
    onnx_export.export_forward = lambda model, target: model
    try:
        yield
    finally:
        onnx_export.export_forward = original


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="4f54ecf", help="commit whose default export is the 'old' candidate")
    ap.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "isic2017" / "val" / "images"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=10, help="timed runs per candidate and round at batch 1 (batch 8: runs/4)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    images = np.stack([preprocess(read_image(p)) for p in find_images([Path(args.images)])[:8]])
    reference = reference_probs(load_checkpoint(resolve_model("ultralbm", "torch")).model.eval(), images)
    tmp = Path(tempfile.mkdtemp(prefix="default-speed-"))
    site = baseline_package(args.baseline, tmp / "baseline")
    candidates: dict[tuple[str, int], ort.InferenceSession] = {}
    forms: dict[str, str] = {}
    for batch in (1, 8):
        old = tmp / f"old_b{batch}.onnx"
        forms["old"] = f"{args.baseline} default ({export_baseline(site, old, batch)})"
        candidates["old", batch] = session(old, args.threads)
        new = export_onnx("ultralbm", tmp / f"new_b{batch}.onnx", batch=batch, check=False).path
        swapped = OnnxRuntimeBackend(new, threads=args.threads)
        forms["new"] = f"portable, {swapped.scan_form}"
        candidates["new", batch] = swapped.session
        candidates["new, stock graph", batch] = OnnxRuntimeBackend(new, threads=args.threads, swap_scan=False).session
        with _reference_graph():
            reference_graph = export_onnx("ultralbm", tmp / f"ref_b{batch}.onnx", batch=batch, check=False, overwrite=True).path
        candidates["new, reference graph", batch] = OnnxRuntimeBackend(reference_graph, threads=args.threads).session
    forms["new, stock graph"] = "portable, stock Scan graph (swap off)"
    forms["new, reference graph"] = "portable, LinearAttention swapped in, the model's own module graph traced (before the lean export graph)"

    parity = {}
    for (name, batch), sess in candidates.items():
        if batch == 8:
            parity[name] = compare(sess.run(["prob"], {"image": images})[0], reference)
    times: dict[tuple[str, int], list[float]] = {key: [] for key in candidates}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for key in rng.permutation(len(candidates)):
            key = list(candidates)[key]
            batch, sess = key[1], candidates[key]
            feed = {"image": images[:batch]}
            n = args.runs if batch == 1 else max(2, args.runs // 4)
            sess.run(["prob"], feed)
            t0 = time.perf_counter()
            for _ in range(n):
                sess.run(["prob"], feed)
            times[key].append((time.perf_counter() - t0) / n / batch * 1e3)

    rows = []
    for (name, batch), samples in times.items():
        ratio = np.asarray(times["old", batch]) / np.asarray(samples)
        rows.append({
            "candidate": name, "form": forms[name], "batch": batch, "ms_per_image_median": float(np.median(samples)),
            "ms_per_image_min": float(np.min(samples)), "old_over_this_median": float(np.median(ratio)),
            "old_over_this_q25": float(np.quantile(ratio, 0.25)), "old_over_this_q75": float(np.quantile(ratio, 0.75)),
            "max_diff": parity[name].max_abs_diff, "mean_diff": parity[name].mean_abs_diff, "min_dice": parity[name].min_mask_dice,
            "exact": parity[name].ok,
        })  # fmt: skip
    print(f"{'candidate':18s} {'batch':>5s} {'ms/img med':>10s} {'ms/img min':>10s} {'old/this':>8s} {'(q25-q75)':>13s} {'max diff':>9s}  form")
    for r in rows:
        print(f"{r['candidate']:18s} {r['batch']:5d} {r['ms_per_image_median']:10.2f} {r['ms_per_image_min']:10.2f} "
              f"{r['old_over_this_median']:8.2f} ({r['old_over_this_q25']:.2f}-{r['old_over_this_q75']:.2f}) {r['max_diff']:9.2e}  {r['form']}")  # fmt: skip
    report(rows, args.json, threads=args.threads, rounds=args.rounds, torch=torch.__version__, baseline=args.baseline)


if __name__ == "__main__":
    main()
