"""End-to-end folder throughput of `predict` vs pure inference throughput of the same model, in one run.

Pure inference: ``backend.run`` on already-preprocessed batches (the ceiling). End to end: ``runtime.predict``
on the image folder (decode, preprocess, infer, postprocess, atomic PNG writes, results.csv). Target on ISIC
256x256 JPEGs: end-to-end >= 80 % of pure inference. Full-resolution PH2 (~765x574) is reported too.

    python benchmarks/runtime_throughput.py --threads 2 --json benchmarks/results/runtime_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import report

from ultralbm_edge.export import export_onnx
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.imageio import find_images, read_image
from ultralbm_edge.runtime.predict import PredictOptions, predict
from ultralbm_edge.runtime.preprocess import preprocess

SHARED = Path(__file__).resolve().parents[2] / "shared"


def pure_inference(backend, paths: list[Path], batch: int) -> float:
    """Images per second of backend.run alone, on the same images, preprocessed beforehand."""
    x = np.stack([preprocess(read_image(p)) for p in paths])
    backend.run(x[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        backend.run(x[i : i + batch])
    return len(x) / (time.perf_counter() - t0)


def end_to_end(backend, paths: list[Path], batch: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for p in paths:
            shutil.copy(p, folder / p.name)
        predict([folder], backend, Path(tmp) / "out", PredictOptions(batch_size=batch, workers=workers, overwrite=True))  # warm caches
        t0 = time.perf_counter()
        summary = predict([folder], backend, Path(tmp) / "out", PredictOptions(batch_size=batch, workers=workers, overwrite=True))
        seconds = time.perf_counter() - t0
        assert summary.ok == len(paths), summary.failed
    return len(paths) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(SHARED / "fixtures" / "official" / "best.pth"))
    ap.add_argument("--isic", default=str(SHARED / "data" / "isic2017" / "val" / "images"))
    ap.add_argument("--ph2", default=str(SHARED / "data" / "ph2" / "val" / "images"))
    ap.add_argument("--n", type=int, default=200, help="ISIC images to run")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--workers", type=int, default=2, help="predict's decode/preprocess/write threads")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = export_onnx(args.checkpoint, Path(tmp) / "m.onnx", dynamic_batch=True, check=False).path
        backend = open_backend(model, threads=args.threads)
        rows = []
        for name, folder, n in (("isic2017 256x256", args.isic, args.n), ("ph2 full resolution", args.ph2, 30)):
            paths = find_images([Path(folder)])[:n]
            pure = pure_inference(backend, paths, args.batch)
            e2e = end_to_end(backend, paths, args.batch, args.workers)
            rows.append({"data": name, "images": len(paths), "batch": args.batch, "pure_img_s": pure, "e2e_img_s": e2e, "ratio": e2e / pure})
    print(f"{'data':22s} {'images':>6s} {'batch':>5s} {'pure img/s':>10s} {'e2e img/s':>9s} {'e2e/pure':>8s}")
    for r in rows:
        print(f"{r['data']:22s} {r['images']:6d} {r['batch']:5d} {r['pure_img_s']:10.1f} {r['e2e_img_s']:9.1f} {r['ratio']:8.2f}")
    report(rows, args.json, threads=args.threads, workers=args.workers)


if __name__ == "__main__":
    main()
