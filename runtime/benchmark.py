"""On-device latency benchmarking: several models side by side, per batch size, on real images.

Latency is the wall time of ``backend.run`` on a preprocessed batch (p50/p90/p99 over ``runs`` repetitions after
``warmup``); the preprocessing and postprocessing costs are measured separately per image on the same real images,
so the table shows where an end-to-end second goes.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from .backends import Backend
from .errors import UserError
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
    name: str,
    backend: Backend,
    images: list[Path],
    batch_sizes: list[int],
    warmup: int = 3,
    runs: int = 20,
    on_progress: Callable[[int, int], None] | None = None,
) -> ModelBenchmark:
    """Time ``backend`` on ``images`` at each batch size; ``on_progress(done, total)`` counts timed runs."""
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
            if on_progress:
                on_progress(len(result.batches) * runs + len(samples), len(batch_sizes) * runs)
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


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str]:
    import onnxruntime

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_threads": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": onnxruntime.__version__,
        "peak_rss_mb": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
    }


def to_json(results: list[ModelBenchmark]) -> dict:
    return {"environment": environment(), "models": [asdict(r) for r in results]}


def to_rows(results: list[ModelBenchmark]) -> list[dict[str, Any]]:
    """One flat row per model and batch size (the CSV and the report's table)."""
    return [
        {"model": r.model, "backend": r.backend.get("backend", ""), "threads": r.backend.get("threads", ""),
         "device": r.backend.get("device", ""), "batch": b.batch, "p50_ms": round(b.p50_ms, 3), "p90_ms": round(b.p90_ms, 3),
         "p99_ms": round(b.p99_ms, 3), "ms_per_image": round(b.per_image_ms, 3), "images_per_s": round(b.images_per_s, 1),
         "pre_ms_per_image": round(r.preprocess_ms, 3), "post_ms_per_image": round(r.postprocess_ms, 3)}  # fmt: skip
        for r in results
        for b in r.batches
    ]


def to_csv(results: list[ModelBenchmark]) -> str:
    rows = to_rows(results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def latency_plot(results: list[ModelBenchmark]) -> bytes:
    """A PNG of ms/image against batch size, one line per model (matplotlib: the ``[report]`` extra)."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib — pip install 'ultralbm-edge[report]'") from None
    # matplotlib caches fonts in the user's home; a plot must leave nothing outside the files asked for.
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MPLCONFIGDIR"] = cache
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for r in results:
            ax.plot([b.batch for b in r.batches], [b.per_image_ms for b in r.batches], marker="o", label=f"{r.model} ({r.backend.get('backend', '')})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("ms per image (p50)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
        plt.close(fig)
    return buf.getvalue()
