"""Whole-model comparison of the export's scan strategies on ONNX Runtime CPU, side by side in one run.

For each strategy: graph nodes, export seconds, session-load seconds, p50/p90 latency at batch 1 and per-image at
batch 8, max/mean |diff| against the PyTorch reference (sequential scan) on real images, and the ratio to the
"floor": the same network with the recurrence removed (h = b), measured in the same run. Also PyTorch eager with
the reference sequential scan, the speed a naive deployment would get.

    python benchmarks/export_strategies.py --threads 2 --json benchmarks/results/export_strategies_cpu.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from _common import report

from ultralbm_edge.checkpoint import load_checkpoint
from ultralbm_edge.export import export_onnx, export_scans
from ultralbm_edge.ops import register_scan
from ultralbm_edge.runtime.imageio import find_images, read_image
from ultralbm_edge.runtime.model_files import resolve_model
from ultralbm_edge.runtime.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]


@register_scan("floor")
def _no_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Not exact: the network with the scan removed, the speed limit for any scan strategy."""
    return b


def time_session(path: Path, x: np.ndarray, threads: int, runs: int) -> tuple[float, list[float]]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - t0
    for _ in range(3):
        sess.run(None, {"image": x})
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"image": x})
        samples.append(time.perf_counter() - t0)
    return load, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="ultralbm", help="a .pth file or a bundled name (default: the bundled model, "
                    "whose output depends on the scan; the authors' PH2 checkpoint barely does)")
    ap.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "ph2" / "val" / "images"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--strategies", default=",".join(["floor"] + [s for s in export_scans() if s != "floor"]))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ckpt = load_checkpoint(resolve_model(args.checkpoint, "torch"))
    images = np.stack([preprocess(read_image(p)) for p in find_images([Path(args.images)])[:8]])
    ref_model = ckpt.model
    with torch.no_grad(), ref_model.using_scan("sequential"):
        reference = ref_model(torch.from_numpy(images)).numpy()
        eager = []
        for _ in range(max(5, args.runs // 3)):
            t0 = time.perf_counter()
            ref_model(torch.from_numpy(images[:1]))
            eager.append(time.perf_counter() - t0)
    rows = [{"strategy": "pytorch-eager-sequential", "b1_p50_ms": 1e3 * float(np.median(eager))}]
    tmp = Path(tempfile.mkdtemp())
    for strategy in args.strategies.split(","):
        row: dict = {"strategy": strategy}
        for batch in (1, 8):
            path = tmp / f"{strategy}_b{batch}.onnx"
            # Without the parity gate (the floor is not exact by construction); parity is measured below on 8 real
            # images, against the sequential reference.
            done = export_onnx(ckpt, path, scan=strategy, batch=batch, check=False)
            res = (done.seconds, done.nodes)
            load, samples = time_session(path, images[:batch], args.threads, args.runs if batch == 1 else max(5, args.runs // 3))
            p50, p90 = np.percentile(np.asarray(samples) * 1e3, [50, 90])
            row.update({f"b{batch}_p50_ms": float(p50), f"b{batch}_p90_ms": float(p90), f"b{batch}_per_image_ms": float(p50) / batch})
            if batch == 1:
                row.update({"nodes": res[1], "export_s": res[0], "load_s": load, "size_kb": path.stat().st_size / 1024})
        sess = ort.InferenceSession(str(tmp / f"{strategy}_b8.onnx"), providers=["CPUExecutionProvider"])
        diff = np.abs(sess.run(None, {"image": images})[0] - reference)
        row.update({"max_diff": float(diff.max()), "mean_diff": float(diff.mean())})
        rows.append(row)
    floor = next(r for r in rows if r["strategy"] == "floor")
    for r in rows:
        r["ratio_to_floor_b1"] = r["b1_p50_ms"] / floor["b1_p50_ms"]
        if "b8_per_image_ms" in r:
            r["b8_over_b1_per_image"] = r["b8_per_image_ms"] / r["b1_p50_ms"]

    head = f"{'strategy':26s} {'nodes':>6s} {'export s':>8s} {'load s':>6s} {'KB':>5s} {'b1 p50':>7s} {'b1 p90':>7s} " \
           f"{'b8 ms/img':>9s} {'b8/b1':>6s} {'x floor':>7s} {'max diff':>9s} {'mean diff':>9s}"
    print(head)
    for r in rows:
        if "nodes" not in r:
            print(f"{r['strategy']:26s} {'':>6s} {'':>8s} {'':>6s} {'':>5s} {r['b1_p50_ms']:7.2f} {'':>7s} {'':>9s} {'':>6s} {r['ratio_to_floor_b1']:7.2f}")
            continue
        print(f"{r['strategy']:26s} {r['nodes']:6d} {r['export_s']:8.2f} {r['load_s']:6.2f} {r['size_kb']:5.0f} {r['b1_p50_ms']:7.2f} "
              f"{r['b1_p90_ms']:7.2f} {r['b8_per_image_ms']:9.2f} {r['b8_over_b1_per_image']:6.2f} {r['ratio_to_floor_b1']:7.2f} "
              f"{r['max_diff']:9.2e} {r['mean_diff']:9.2e}")
    report(rows, args.json, threads=args.threads, torch=torch.__version__)


if __name__ == "__main__":
    main()
