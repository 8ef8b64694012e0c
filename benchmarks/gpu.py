"""Side-by-side GPU benchmark: the authors' code with mamba_ssm vs our eager and CUDA-graph paths (+ ONNX Runtime CPU).

One run, one GPU, the same preprocessed ISIC 2017 validation images for every contender:

- ``authors_eager``: the authors' ``models/UltraLBM_UNet.py`` with mamba_ssm's CUDA selective scan (fp32);
- ``ours_eager``: our model, fused Triton scan, eager PyTorch (fp32);
- ``ours_graph_<precision>``: ``ultralbm_edge.gpu.CudaGraphRunner``, one CUDA graph per batch size (fp32; tf32;
  fp16/bf16 under autocast; fp32 with channels-last tensors; fp32 without the fused Triton conv/upsample kernels);
- ``ours_graph_fp32_host``: the same, host array in and out through pinned memory (what ``predict`` pays);
- ``ours_compiled_graph_fp32``/``_fp16`` (``--compile``): torch.compile, then the CUDA graph;
- ``ours_autotuned_graph_fp32`` (``--autotune``): the same with Inductor's max-autotune;
- ``onnxruntime_cpu``: the exported ONNX model on ONNX Runtime's CPU provider, for reference.

Latency is per forward pass, input already on the GPU (except ``_host``), synchronised each iteration: p50/p90 in
ms and images/s at p50. Parity: max |ours - authors'| per batch (fp32 paths), and over all images the mask Dice of
fp16/bf16 against fp32. Third-party code is never vendored: pass where the authors' repository and an importable
mamba_ssm live.

    python benchmarks/gpu.py --authors-repo PATH --mamba-path PATH [--mamba-ext PATH] \\
        --images ../shared/data/isic2017/val/images --checkpoint ../shared/fixtures/official/best.pth \\
        [--onnx model.onnx] --out benchmarks/results/gpu_h100.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ultralbm_edge.checkpoint import load_checkpoint
from ultralbm_edge.runtime.metrics import dice
from ultralbm_edge.gpu import CudaGraphRunner
from ultralbm_edge.runtime.imageio import find_images, read_image
from ultralbm_edge.runtime.preprocess import preprocess


def load_inputs(images: Path, count: int) -> np.ndarray:
    paths = find_images([images])[:count]
    if not paths:
        raise SystemExit(f"{images}: no images found")
    batch = np.stack([preprocess(read_image(p)) for p in paths])
    reps = -(-count // len(batch))  # fewer images than the largest batch: repeat them
    return np.concatenate([batch] * reps)[:count]


def load_authors_model(authors_repo: Path, mamba_path: Path, mamba_ext: Path | None, state_dict: dict) -> torch.nn.Module:
    for p in [mamba_ext, mamba_path, authors_repo]:
        if p is not None:
            sys.path.insert(0, str(p))
    module = importlib.import_module("models.UltraLBM_UNet")
    model = module.UltraLBM_UNet()
    model.load_state_dict(state_dict, strict=True)
    return model.cuda().eval()


def percentiles(times_ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times_ms, n=10)
    return {"p50_ms": statistics.median(times_ms), "p90_ms": q[8]}


def time_gpu(fn: Callable[[], object], iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_cpu(fn: Callable[[], object], iters: int) -> list[float]:
    fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def save(path: Path, results: dict) -> None:
    """Written after every batch too, so a run cut short still leaves its rows (with their ratios)."""
    base = {r["batch"]: r["p50_ms"] for r in results["rows"] if r["path"] == "authors_eager_fp32"}
    for r in results["rows"]:  # against the authors' code at the same batch, p50 to p50
        if r["batch"] in base:
            r["speedup_vs_authors"] = base[r["batch"]] / r["p50_ms"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def iterations(batch: int, base: int) -> int:
    return max(10, base // max(1, batch // 8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="folder of validation images (ISIC 2017 val)")
    ap.add_argument("--authors-repo", type=Path, help="checkout of LinLinLin-X/UltraLBM-UNet (holds models/)")
    ap.add_argument("--mamba-path", type=Path, help="folder holding an importable mamba_ssm package")
    ap.add_argument("--mamba-ext", type=Path, help="folder holding the built selective_scan_cuda extension")
    ap.add_argument("--onnx", type=Path, help="exported ONNX model (dynamic batch) for the ONNX Runtime CPU reference")
    ap.add_argument("--ort-batches", default="1,8", help="batch sizes for ONNX Runtime CPU (slow)")
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--iters", type=int, default=100, help="timed iterations at batch <= 8 (fewer for larger)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile + CUDA graph")
    ap.add_argument("--autotune", action="store_true", help="also time torch.compile with max-autotune (~150 s per batch size)")
    ap.add_argument("--paths", help="comma-separated CudaGraphRunner rows to time (default: all)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    # fp32 means fp32 for every contender: PyTorch lets cuDNN use TF32 for convolutions by default, which
    # moves the probabilities by up to ~1e-2 and would make the parity numbers measure TF32, not the code.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    ckpt = load_checkpoint(args.checkpoint)
    inputs = load_inputs(args.images, max(batches))
    threshold = ckpt.threshold
    device_name = torch.cuda.get_device_name()
    print(f"{device_name}, torch {torch.__version__}, {len(inputs)} inputs", flush=True)
    results: dict = {
        "gpu": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "command": " ".join(["python", *sys.argv]),
        "checkpoint_sha256": ckpt.sha256,
        "inputs": f"{args.images.name}: {len(inputs)} preprocessed images (256x256)",
        "timing": "per forward, input on the GPU: in the graph's input buffer for CudaGraphRunner rows (p50_ms_with_input_copy: "
        "from a separate tensor); host rows: numpy in/out; torch.cuda.synchronize each iteration",
        "fp32": "TF32 off for every contender (cuDNN and cuBLAS)",
        "rows": [],
        "parity": {},
    }
    rows = results["rows"]

    def record(name: str, batch: int, times: list[float], **extra) -> None:
        stats = percentiles(times)
        row = {"path": name, "batch": batch, **stats, "images_per_s": batch / stats["p50_ms"] * 1e3, "iters": len(times), **extra}
        rows.append(row)
        print(f"{name:28s} b={batch:4d} p50 {stats['p50_ms']:9.3f} ms  p90 {stats['p90_ms']:9.3f} ms  "
              f"{row['images_per_s']:10.0f} img/s", flush=True)  # fmt: skip

    state_dict = ckpt.model.state_dict()
    authors = None
    if args.authors_repo and args.mamba_path:
        authors = load_authors_model(args.authors_repo, args.mamba_path, args.mamba_ext, state_dict)
        import mamba_ssm

        results["mamba_ssm"] = getattr(mamba_ssm, "__version__", "?")

    ours_eager = ckpt.model.cuda().eval().set_scan_strategy("triton")
    variants = {  # row name -> CudaGraphRunner options
        "ours_graph_fp32": dict(precision="fp32"),
        "ours_graph_fp32_unfused": dict(precision="fp32", fused=False),
        "ours_graph_tf32": dict(precision="tf32"),
        "ours_graph_fp16": dict(precision="fp16"),
        "ours_graph_bf16": dict(precision="bf16"),
        "ours_graph_fp32_channels_last": dict(precision="fp32", channels_last=True),
    }
    if args.compile:
        variants["ours_compiled_graph_fp32"] = dict(precision="fp32", compile=True)
        variants["ours_compiled_graph_fp16"] = dict(precision="fp16", compile=True)
    if args.autotune:
        variants["ours_autotuned_graph_fp32"] = dict(precision="fp32", compile="max-autotune")
    if args.paths:
        wanted = set(args.paths.split(",")) | {"ours_graph_fp32", "ours_graph_fp16", "ours_graph_bf16"}  # used below
        variants = {name: opts for name, opts in variants.items() if name in wanted}
    runners = {name: CudaGraphRunner(load_checkpoint(args.checkpoint).model, **opts) for name, opts in variants.items()}

    authors_out: dict[int, torch.Tensor] = {}
    for batch in batches:
        x = torch.from_numpy(inputs[:batch]).cuda()
        iters = iterations(batch, args.iters)
        parity = results["parity"].setdefault(str(batch), {})
        with torch.inference_mode():
            if authors is not None:
                ref = authors(x).float()
                authors_out[batch] = ref
                record("authors_eager_fp32", batch, time_gpu(lambda: authors(x), min(iters, 50), 5))
            y = ours_eager(x).float()
            if authors is not None:
                parity["ours_eager_fp32_max_abs_diff"] = float((y - ref).abs().max())
            record("ours_eager_fp32", batch, time_gpu(lambda: ours_eager(x), min(iters, 50), 5))
        for name, runner in list(runners.items()):
            try:
                t0 = time.perf_counter()
                runner.capture(batch)
                capture_s = time.perf_counter() - t0
                y = runner.run_device(x).clone()
                if authors is not None:
                    parity[f"{name}_max_abs_diff"] = float((y - ref).abs().max())
                    parity[f"{name}_mask_dice_vs_authors"] = dice(
                        (y > threshold).cpu().numpy(), (ref > threshold).cpu().numpy()
                    )
                # Timed with the batch already in the graph's input buffer, as a GPU producer would leave it;
                # the extra device-to-device copy of a separate input tensor is reported beside it.
                with_copy = percentiles(time_gpu(lambda: runner.run_device(x), max(10, iters // 2), 10))["p50_ms"]
                buffer = runner.input_buffer(batch, tuple(x.shape[2:]), x.shape[1])
                buffer.copy_(x)
                record(name, batch, time_gpu(lambda: runner.run_device(buffer), iters, 20), capture_s=capture_s,
                       p50_ms_with_input_copy=with_copy)  # fmt: skip
            except Exception as e:  # report it and keep the other rows
                results.setdefault("errors", []).append(f"{name} b={batch}: {type(e).__name__}: {str(e)[:300]}")
                print(f"{name} failed at batch {batch}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                del runners[name]
        host = inputs[:batch]
        record("ours_graph_fp32_host", batch, time_gpu(lambda: runners["ours_graph_fp32"].run(host), iters, 10))
        save(args.out, results)

    # Reduced precision on every image, as masks: Dice and max |diff| against the fp32 graph.
    x_all = inputs
    fp32 = runners["ours_graph_fp32"].run(x_all)
    results["precision"] = {"images": len(x_all), "threshold": threshold}
    for precision in ("fp16", "bf16"):
        out = runners[f"ours_graph_{precision}"].run(x_all)
        masks_ref, masks = fp32 > threshold, out > threshold
        per_image = [dice(a, b) for a, b in zip(masks_ref, masks)]
        results["precision"][precision] = {
            "mask_dice_vs_fp32_global": dice(masks_ref, masks),
            "mask_dice_vs_fp32_min_image": min(per_image),
            "max_abs_prob_diff_vs_fp32": float(np.abs(out - fp32).max()),
        }
    print(json.dumps(results["precision"], indent=1), flush=True)

    if args.onnx:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        results["onnxruntime"] = {"version": ort.__version__, "cpu": platform.processor() or platform.machine()}
        for batch in [int(b) for b in args.ort_batches.split(",")]:
            feed = {name: inputs[:batch]}
            out = sess.run(None, feed)[0]
            if batch in authors_out:
                results["parity"][str(batch)]["onnxruntime_cpu_max_abs_diff"] = float(
                    np.abs(out - authors_out[batch].cpu().numpy()).max()
                )
            record("onnxruntime_cpu_fp32", batch, time_cpu(lambda: sess.run(None, feed), max(3, 40 // batch)))

    save(args.out, results)
    print(f"\n{'path':28s} {'batch':>5s} {'p50 ms':>9s} {'p90 ms':>9s} {'img/s':>10s} {'x authors':>9s}")
    for r in rows:
        print(f"{r['path']:28s} {r['batch']:5d} {r['p50_ms']:9.3f} {r['p90_ms']:9.3f} {r['images_per_s']:10.0f} "
              f"{r.get('speedup_vs_authors', float('nan')):9.1f}")  # fmt: skip
    print(json.dumps(results["parity"], indent=1))


if __name__ == "__main__":
    main()
