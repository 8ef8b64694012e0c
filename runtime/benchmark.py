"""On-device latency benchmarking: several models side by side, per batch size, on real images.

Latency is the wall time of ``backend.run`` on a preprocessed batch (p50/p90/p99 over ``runs`` repetitions after
``warmup``); the preprocessing and postprocessing costs are measured separately per image on the same real images,
so the table shows where an end-to-end second goes.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .backends import Backend
from .imageio import read_image
from .postprocess import PostprocessOptions, probability_to_mask
from .preprocess import preprocess


@dataclass
class BatchTiming:
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    per_image_ms: float
    images_per_s: float


@dataclass
class ModelBenchmark:
    model: str
    backend: dict[str, str]
    preprocess_ms: float  # per image: decode + preprocess
    postprocess_ms: float  # per image: resize, threshold, components, holes
    batches: list[BatchTiming] = field(default_factory=list)


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(np.asarray(samples) * 1e3, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def benchmark_model(
    name: str, backend: Backend, images: list[Path], batch_sizes: list[int], warmup: int = 3, runs: int = 20
) -> ModelBenchmark:
    size = backend.metadata.image_size
    pre, decoded, inputs = [], [], []
    for p in images:
        t0 = time.perf_counter()
        rgb = read_image(p)
        x = preprocess(rgb, size)
        pre.append(time.perf_counter() - t0)
        decoded.append(rgb.shape[:2])
        inputs.append(x)
    result = ModelBenchmark(name, backend.describe(), float(np.median(pre) * 1e3), 0.0)
    for bs in batch_sizes:
        batch = np.stack([inputs[i % len(inputs)] for i in range(bs)])
        for _ in range(warmup):
            backend.run(batch)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            backend.run(batch)
            samples.append(time.perf_counter() - t0)
        p50, p90, p99 = _percentiles(samples)
        result.batches.append(BatchTiming(bs, p50, p90, p99, p50 / bs, 1e3 * bs / p50))
    opts = PostprocessOptions(backend.metadata.threshold)
    post = []
    for (h, w), prob in zip(decoded, backend.run(np.stack(inputs[: max(batch_sizes)]))):
        t0 = time.perf_counter()
        probability_to_mask(prob[0], h, w, opts)
        post.append(time.perf_counter() - t0)
    result.postprocess_ms = float(np.median(post) * 1e3)
    return result


def environment() -> dict[str, str]:
    import onnxruntime

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": onnxruntime.__version__,
        "peak_rss_mb": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
    }


def to_json(results: list[ModelBenchmark]) -> dict:
    return {"environment": environment(), "models": [asdict(r) for r in results]}
