"""FP32 vs FP16 vs INT8 (Q/DQ) side by side on ONNX Runtime CPU: accuracy on real images and latency, one run.

For one checkpoint (default: the bundled ``ultralbm``): export FP32 and FP16 ONNX, calibrate an INT8 Q/DQ ONNX on
unlabeled ISIC 2017 test images (``ultralbm-edge calibrate``'s library call), then for each: DSC/IoU on a labeled
folder (the paper's global confusion matrix, ``runtime.evaluate``), mean mask Dice against the FP32 masks, and the
p50 latency at batch 1 and per image at batch 8. The INT8 target: DSC within 0.5 points of FP32; FP16: mask Dice
vs FP32 >= 0.998. TensorRT engines are not timed here (no GPU that TensorRT-RTX runs on).

    python benchmarks/precision_accuracy.py --json benchmarks/results/precision_cpu.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import report

from ultralbm_edge.calibration import quantize_int8
from ultralbm_edge.export import export_onnx
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.benchmark import benchmark_model
from ultralbm_edge.runtime.dataset import first_images, paired_files
from ultralbm_edge.runtime.evaluate import evaluate
from ultralbm_edge.runtime.imageio import read_image
from ultralbm_edge.runtime.metrics import dice
from ultralbm_edge.runtime.model_files import resolve_model
from ultralbm_edge.runtime.preprocess import preprocess

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "isic2017"


def mask_agreement(reference: np.ndarray, other: np.ndarray, threshold: float) -> float:
    """Mean per-image Dice between two stacks of probability maps, thresholded."""
    return float(np.mean([dice(a >= threshold, b >= threshold) for a, b in zip(reference, other)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="ultralbm", help="a .pth file or a bundled name")
    ap.add_argument("--data", type=Path, default=SHARED / "val", help="labeled folder (images/, masks/)")
    ap.add_argument("--calib", type=Path, default=SHARED / "test" / "images", help="unlabeled calibration images")
    ap.add_argument("--num-images", type=int, default=256, help="calibration images")
    ap.add_argument("--method", default="percentile", help="calibration method: minmax, entropy, percentile")
    ap.add_argument("--scan", default="auto", help="scan strategy of the exports")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp())
    source = resolve_model(args.checkpoint, "torch")
    fp32 = export_onnx(source, tmp / "m.onnx", scan=args.scan, dynamic_batch=True).path
    fp16 = export_onnx(source, tmp / "m.fp16.onnx", scan=args.scan, dynamic_batch=True, fp16=True).path
    int8 = quantize_int8(fp32, args.calib, tmp / "m.int8.onnx", method=args.method, num_images=args.num_images)
    models = {"fp32": fp32, "fp16": fp16, "int8": int8.path}

    sample = np.stack([preprocess(read_image(img)) for img, _ in paired_files(args.data)[:64]])
    timing_images = first_images(args.data / "images", 8)
    rows, probs = [], {}
    for name, path in models.items():
        backend = open_backend(path, threads=args.threads)
        metrics = evaluate(backend, args.data)
        probs[name] = np.concatenate([backend.run(sample[i : i + 8]) for i in range(0, len(sample), 8)])
        timing = benchmark_model(name, backend, timing_images, [1, 8], runs=args.runs)
        b1, b8 = timing.batches
        rows.append({
            "precision": name, "dsc": 100 * metrics["dsc"], "iou": 100 * metrics["iou"],
            "mask_dice_vs_fp32": mask_agreement(probs["fp32"], probs[name], backend.metadata.threshold),
            "b1_p50_ms": b1.p50_ms, "b8_per_image_ms": b8.per_image_ms, "size_kb": path.stat().st_size / 1024,
        })  # fmt: skip
    base = rows[0]
    print(f"{'precision':9s} {'DSC':>6s} {'IoU':>6s} {'dDSC':>6s} {'Dice vs fp32':>12s} {'b1 p50 ms':>9s} {'b8 ms/img':>9s} {'KB':>5s}")
    for r in rows:
        r["dsc_drop_vs_fp32"] = base["dsc"] - r["dsc"]
        print(f"{r['precision']:9s} {r['dsc']:6.2f} {r['iou']:6.2f} {-r['dsc_drop_vs_fp32']:+6.2f} {r['mask_dice_vs_fp32']:12.5f} "
              f"{r['b1_p50_ms']:9.2f} {r['b8_per_image_ms']:9.2f} {r['size_kb']:5.0f}")  # fmt: skip
    report(rows, args.json, threads=args.threads, checkpoint=str(source), data=str(args.data), scan=args.scan,
           calibration=f"{int8.method} on {int8.n_images} images from {args.calib} in {int8.seconds:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
