"""The default export against the previous default, side by side on ONNX Runtime CPU, at batch 1 and 8.

"new" is today's `ultralbm-edge export` output (``portable``, the lean export graph of ``export.lean_forward``) as
the ONNX Runtime backend opens it: its scans swapped to LinearAttention at load time on onnxruntime >= 1.25.1; "new,
stock graph" is the same file with the swap off (what onnxruntime 1.17-1.25.0 and OpenVINO run); "new, reference
graph" is today's export traced from the model's own modules (the lean graph's lever alone). "old" is the default
export of an earlier commit (``--baseline``, by default 5d27715, issue 17's baseline: ``linear_attention``), built
from that commit's source with `git archive`.
"new, scan removed" is not the network: the portable export with each scan's whole region (every node from the
scan's eight inputs to its output: softplus, log-decay, transposes, the recurrence, the gating) replaced by one
Identity of its input u (``scan_removed``), i.e. what any scan implementation, a native kernel included, could at best
reach with the rest of the graph as it is; its ratio is a bound, its parity row shows it is not exact.
All candidates run in one process, interleaved round by round; ratios are old/candidate per round (> 1: faster
than the old default), reported as the median over rounds. Parity is against PyTorch (sequential scan) on real
images. The script ends with where the default's time goes (``time_breakdown``): its convolution/MatMul work
against this machine's measured MatMul rate (the compute bound) and ONNX Runtime's per-operator profile.

    python benchmarks/default_speed.py --baseline 5d27715 --threads 2 --rounds 30 --json benchmarks/results/default_speed_cpu.json
    python benchmarks/default_speed.py --baseline 5d27715 --threads 1 --rounds 30 --json benchmarks/results/default_speed_cpu_t1.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from _common import baseline_package, report
from onnx import helper
from ultralbm_edge.export import export_onnx, onnx_export, reference_probs
from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ultralbm_edge.runtime.backends.ort_scan_swap import read_swap_record, swap_scans, swapped_bytes
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


def session(model: Path | bytes, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


def scan_removed(portable: bytes) -> bytes:
    """The portable export with each recorded scan region replaced by ``y = u`` (same shape): the scan costs nothing.
    Not the network; a bound for any faster scan."""
    model = onnx.load_from_string(portable)
    record = read_swap_record(model)
    if record is None:
        raise SystemExit("the default export records no scans (ultralbm.scan_swap): nothing to remove")

    def identity(prefix: str, inputs: list[str], output: str, d_inner: int) -> list[onnx.NodeProto]:
        return [helper.make_node("Identity", [inputs[0]], [output], name=f"{prefix}/scan_removed")]

    return swap_scans(model, record, identity).SerializeToString()


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model).graph
    infos = [*inferred.value_info, *inferred.input, *inferred.output]
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in infos}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    return shapes


def work_per_image(portable: Path, batch: int) -> dict[str, float]:
    """Multiply-add work of the stock (portable) graph per image, in FLOP (2 per multiply-add): convolutions,
    MatMuls and the scans (each Scan step: a multiply-add per state element, then C times the state, summed)."""
    model = onnx.load(str(portable))
    shapes = _shapes(model)
    flop = {"conv": 0.0, "matmul": 0.0, "scan": 0.0}
    for node in model.graph.node:
        out = shapes.get(node.output[0], [])
        if node.op_type == "Conv":
            w = shapes[node.input[1]]
            flop["conv"] += 2 * float(np.prod(out)) * float(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes[node.input[0]]
            flop["matmul"] += 2 * float(np.prod(out)) * a[-1]
        elif node.op_type == "Scan":
            flop["scan"] += 4 * float(np.prod(shapes[node.input[1]]))  # a_t: [batch, d_inner, L, d_state]
    return {k: v / batch for k, v in flop.items()}


def matmul_rate(threads: int, n: int = 1024, runs: int = 20) -> float:
    """FLOP/s of one n x n x n MatMul on ONNX Runtime CPU with ``threads``, its fastest run (a bound takes the
    machine at its best): the rate the compute bound assumes."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "x"], ["y"])], "mm", [x], [y])
    sess = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), threads)
    feed = {"x": np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)}
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def op_shares(model: bytes, batch: int, threads: int, runs: int, folder: Path) -> dict[str, float]:
    """Share of ONNX Runtime's kernel time per operator type (profiled runs; the profile's own overhead inflates
    small operators, so read the large shares)."""
    sess = session(model, threads, profile_prefix=str(folder / f"profile_b{batch}"))
    feed = {"image": np.random.default_rng(0).standard_normal((batch, 3, 256, 256), dtype=np.float32)}
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    kernel_us: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            kernel_us[e["args"]["op_name"]] = kernel_us.get(e["args"]["op_name"], 0.0) + e["dur"]
    total = sum(kernel_us.values())
    return {op: us / total for op, us in sorted(kernel_us.items(), key=lambda kv: -kv[1])}


def time_breakdown(portables: dict[int, Path], swapped: dict[int, bytes], measured_ms: dict[int, float], threads: int,
                   folder: Path) -> dict:
    """Where the default's time goes against the compute bound, printed and returned for the report."""
    rate = matmul_rate(threads)
    out = {"matmul_gflops": rate / 1e9, "batches": {}}
    print(f"\nwhere the time goes (ONNX Runtime MatMul 1024^3 with {threads} threads: {rate / 1e9:.1f} GFLOP/s):")
    for batch, path in portables.items():
        work = work_per_image(path, batch)
        bound_ms = sum(work.values()) / rate * 1e3
        shares = op_shares(swapped[batch], batch, threads, runs=20, folder=folder)
        out["batches"][batch] = {"mflop_per_image": {k: v / 1e6 for k, v in work.items()}, "compute_bound_ms": bound_ms,
                                 "measured_ms": measured_ms[batch], "over_bound": measured_ms[batch] / bound_ms,
                                 "kernel_time_share": shares}  # fmt: skip
        top = ", ".join(f"{op} {100 * v:.1f} %" for op, v in list(shares.items())[:10])
        print(f"  batch {batch}: {sum(work.values()) / 1e6:.0f} MFLOP/image (conv {work['conv'] / 1e6:.0f}, MatMul "
              f"{work['matmul'] / 1e6:.0f}, scan {work['scan'] / 1e6:.1f}) -> compute bound {bound_ms:.2f} ms/image; "
              f"measured {measured_ms[batch]:.2f} ms/image = {measured_ms[batch] / bound_ms:.1f}x the bound")  # fmt: skip
        print(f"    kernel time by operator: {top}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="5d27715", help="commit whose default export is the 'old' candidate")
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
    portables: dict[int, Path] = {}
    swapped_models: dict[int, bytes] = {}
    for batch in (1, 8):
        old = tmp / f"old_b{batch}.onnx"
        forms["old"] = f"{args.baseline} default ({export_baseline(site, old, batch)})"
        candidates["old", batch] = session(old, args.threads)
        new = export_onnx("ultralbm", tmp / f"new_b{batch}.onnx", batch=batch, check=False).path
        swapped = OnnxRuntimeBackend(new, threads=args.threads)
        forms["new"] = f"portable, {swapped.scan_form}"
        candidates["new", batch] = swapped.session
        data = new.read_bytes()
        portables[batch], swapped_models[batch] = new, swapped_bytes(data, ort.__version__)
        candidates["new, scan removed", batch] = session(scan_removed(data), args.threads)
        candidates["new, stock graph", batch] = OnnxRuntimeBackend(new, threads=args.threads, swap_scan=False).session
        with _reference_graph():
            reference_graph = export_onnx("ultralbm", tmp / f"ref_b{batch}.onnx", batch=batch, check=False, overwrite=True).path
        candidates["new, reference graph", batch] = OnnxRuntimeBackend(reference_graph, threads=args.threads).session
    forms["new, stock graph"] = "portable, stock Scan graph (swap off)"
    forms["new, scan removed"] = "bound, not the network: new with each scan region replaced by y = u"
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
    new_ms = {r["batch"]: r["ms_per_image_median"] for r in rows if r["candidate"] == "new"}
    breakdown = time_breakdown(portables, swapped_models, new_ms, args.threads, tmp)
    report(rows, args.json, {"time_breakdown": breakdown}, threads=args.threads, rounds=args.rounds, torch=torch.__version__,
           baseline=args.baseline)  # fmt: skip


if __name__ == "__main__":
    main()
