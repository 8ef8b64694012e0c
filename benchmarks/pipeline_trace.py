"""Where an image waits in folder prediction: every worker task of one ``predict`` call, timed at each hand-over.

For issue 18 (GPU folder prediction end to end vs pure inference; findings in ``results/gpu_folder_h200.md``): where
the main thread waits for the worker processes, and whether they are short of work or of CPU. This script times each
task of the pool (``_load_many``: decode a chunk; ``_finish_many``: post-process and write one):

- ``queued``: from ``submit`` until a worker started it (waiting behind other tasks, or for the parent's threads
  that feed the pool);
- ``run``: in the worker;
- ``delivered``: from the worker's end until its future was done in the parent (the pool's result thread, which
  needs the parent's GIL);
- ``main_waited``: how long the main thread blocked in ``result()`` for it (0 when it was done before asked);
- ``lead``: from ``submit`` until the main thread asked for its result (a decode task submitted with less lead than
  it takes to queue, run and deliver makes the main thread wait: too little decoded ahead).

Medians and 90th percentiles per kind, the workers' busy share and the main thread's total wait are printed and
written as JSON. The code under test is unchanged: the pool is wrapped from outside (``predict._worker_pool``).
Clocks: ``time.monotonic`` (one system-wide clock on Linux, so worker and parent times compare).

``--variant NAME:key=value,...`` (repeatable) runs the same folder with predict's pipeline constants changed, the
variants alternating run by run: ``slots_per_batch_image``, ``slot_bytes`` (every slot this size instead of sized
from the folder), ``decode_ahead_batches``, ``images_per_task``, ``workers``, ``unnamed_files`` (0: masks written
through a named temporary file and a rename, as before ``runtime.files.write_bytes_atomic`` linked unnamed files).
Without it, the code as shipped. Every run writes into a fresh output folder (masks created, not replaced).

    python benchmarks/pipeline_trace.py --images <isic val images> --copies 20 --backend torch --device cuda \
        --batch 64 --workers 16 --json pipeline_trace_h200.json
    python benchmarks/pipeline_trace.py --images <isic val images> --copies 20 --backend torch --device cuda \
        --variant "5 slots of 2.6 MB:slots_per_batch_image=5,slot_bytes=2621440" --variant "as shipped:" \
        --variant "24 workers:workers=24"
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from _common import replicate

from ultralbm_edge.runtime import files as files_module
from ultralbm_edge.runtime import predict as predict_module
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.predict import PredictOptions, predict

_KINDS = {"_load_many": "decode", "_finish_many": "write"}


def _timed(fn, *args):
    """Run in the worker: the task's result and when it started and ended there."""
    start = time.monotonic()
    result = fn(*args)
    return result, start, time.monotonic()


@dataclass
class _Task:
    kind: str
    submitted: float
    started: float = 0.0
    ended: float = 0.0
    delivered: float = 0.0
    asked: float | None = None  # when the main thread first called result()


class _TracedFuture(Future):
    def __init__(self, task: _Task) -> None:
        super().__init__()
        self.task = task

    def result(self, timeout=None):
        if self.task.asked is None:
            self.task.asked = time.monotonic()
        return super().result(timeout)


class TracingPool:
    """Wraps the pool predict made: each task is timed (``_timed``) and recorded in ``tasks``."""

    def __init__(self, pool: Executor, tasks: list[_Task]) -> None:
        self.pool, self.tasks = pool, tasks

    def submit(self, fn, *args):
        task = _Task(_KINDS.get(fn.__name__, fn.__name__), time.monotonic())
        self.tasks.append(task)
        outer = _TracedFuture(task)
        inner = self.pool.submit(_timed, fn, *args)

        def done(f: Future) -> None:
            task.delivered = time.monotonic()
            if outer.cancelled():  # predict cancelled it (a write error stops the run)
                return
            if f.cancelled():
                outer.cancel()
                outer.set_running_or_notify_cancel()
            elif f.exception() is not None:
                outer.set_exception(f.exception())
            else:
                result, task.started, task.ended = f.result()
                outer.set_result(result)

        inner.add_done_callback(done)
        return outer

    def __enter__(self):
        self.pool.__enter__()
        return self

    def __exit__(self, *exc):
        return self.pool.__exit__(*exc)


def summarise(tasks: list[_Task], wall: float, workers: int) -> dict:
    """Per kind: count, median and 90th percentile (ms) of each wait; the workers' busy share; the main thread's
    total wait in result()."""
    out: dict = {"wall_s": round(wall, 3)}
    done = [t for t in tasks if t.ended and t.kind in _KINDS.values()]
    for kind in sorted({t.kind for t in done}):
        mine = [t for t in done if t.kind == kind]
        parts = {"queued": [t.started - t.submitted for t in mine], "run": [t.ended - t.started for t in mine],
                 "delivered": [t.delivered - t.ended for t in mine],
                 "main_waited": [max(0.0, t.delivered - t.asked) if t.asked is not None else 0.0 for t in mine],
                 "lead": [t.asked - t.submitted if t.asked is not None else t.delivered - t.submitted for t in mine]}  # fmt: skip
        out[kind] = {"tasks": len(mine), **{f"{name}_ms_median": round(float(np.median(v)) * 1e3, 3) for name, v in parts.items()},
                     **{f"{name}_ms_p90": round(float(np.percentile(v, 90)) * 1e3, 3) for name, v in parts.items()},
                     "main_waited_s_total": round(sum(parts["main_waited"]), 3)}  # fmt: skip
    out["workers_busy_share"] = round(sum(t.ended - t.started for t in done) / (workers * wall), 3)
    return out


def traced_predict(folder: Path, backend, opts: PredictOptions, out: Path) -> tuple[dict, int]:
    """One predict call with its pool traced: the summary and the images done."""
    tasks: list[_Task] = []
    original = predict_module._worker_pool
    predict_module._worker_pool = lambda *a, **k: TracingPool(original(*a, **k), tasks)
    try:
        t0 = time.monotonic()
        summary = predict([folder], backend, out, opts)
        wall = time.monotonic() - t0
    finally:
        predict_module._worker_pool = original
    assert not summary.failed, summary.failed[:3]
    return {"images": summary.ok, "img_s": round(summary.ok / wall, 1), **summarise(tasks, wall, opts.workers)}, summary.ok


# --variant keys -> predict's module constants (slot_bytes fixes the range slots are sized within to one size)
_CONSTANTS = {"slots_per_batch_image": "_SLOTS_PER_BATCH_IMAGE", "slot_bytes": "_SLOT_BYTES_RANGE",
              "decode_ahead_batches": "_DECODE_AHEAD_BATCHES", "images_per_task": "_IMAGES_PER_TASK"}  # fmt: skip


def parse_variant(text: str) -> tuple[str, dict[str, int]]:
    """``NAME:key=value,key=value`` -> (name, settings); keys are ``_CONSTANTS``'s, ``workers`` and ``unnamed_files``."""
    name, _, spec = text.partition(":")
    settings = {k.strip(): int(v) for k, v in (item.split("=") for item in spec.split(",") if item.strip())}
    known = {*_CONSTANTS, "workers", "unnamed_files"}
    if set(settings) - known:
        raise SystemExit(f"--variant {text!r}: unknown setting(s) {sorted(set(settings) - known)}; known: {sorted(known)}")
    return name, settings


@contextmanager
def patched(settings: dict[str, int]) -> Iterator[None]:
    """predict's pipeline constants set as ``settings`` says for the duration (the workers fork inside, and inherit
    them), then restored."""
    saved = {const: getattr(predict_module, const) for const in _CONSTANTS.values()}
    link_unnamed = files_module._link_unnamed
    try:
        for key, value in settings.items():
            if key in _CONSTANTS:
                setattr(predict_module, _CONSTANTS[key], (value, value) if key == "slot_bytes" else value)
        if settings.get("unnamed_files", 1) == 0:
            files_module._link_unnamed = lambda path, data: False  # the named temporary file and rename
        yield
    finally:
        for const, value in saved.items():
            setattr(predict_module, const, value)
        files_module._link_unnamed = link_unnamed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ultralbm", help="a bundled model name or a model file")
    ap.add_argument("--backend", default="auto", help="auto, or e.g. torch for GPU stages on --device cuda")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--runs", type=int, default=2, help="traced runs after one untimed warm-up run")
    ap.add_argument("--variant", action="append", default=[], help="NAME:key=value,... (see above); repeatable")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("as shipped", {})]
    backend = open_backend(args.model, backend=args.backend, device=args.device)
    opts = PredictOptions(batch_size=args.batch, workers=args.workers, overwrite=True)
    results: list[dict] = [{"name": name, "settings": settings, "runs": []} for name, settings in variants]
    with tempfile.TemporaryDirectory() as tmp:
        folder = replicate(args.images, args.copies, Path(tmp) / "images")
        predict([folder], backend, Path(tmp) / "out", opts)  # warm-up: graphs captured, caches warm
        for k in range(args.runs):
            for v, ((name, settings), result) in enumerate(zip(variants, results)):
                with patched(settings):
                    out = Path(tmp) / f"out_{k}_{v}"
                    run = traced_predict(folder, backend, replace(opts, workers=settings.get("workers", args.workers)), out)[0]
                result["runs"].append(run)
                print(json.dumps({"variant": name, **run}), flush=True)
    for result in results:
        result["img_s_median"] = round(float(np.median([run["img_s"] for run in result["runs"]])), 1)
        print(f"{result['name']}: {result['img_s_median']} img/s (median of {args.runs})")
    if args.json:
        env = {"backend": backend.name, "device": args.device, "batch": args.batch, "workers": args.workers, "cpus": os.cpu_count()}
        args.json.write_text(json.dumps({"environment": env, "variants": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
