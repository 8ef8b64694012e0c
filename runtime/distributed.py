"""Folder prediction on a Ray cluster (Ray Data), with the outputs, manifest and resume rules of ``runtime.predict``.

    planned files -> decode + preprocess (CPU tasks) -> inference (an actor pool on GPUs or CPUs)
                  -> post-processing + writes (CPU tasks) -> rows streamed back -> results.csv

The driver (the process calling :func:`predict_ray`) opens the output folder exactly as a local run does
(``predict.planned_run``: the lock, the manifest, the journal, and the same plan of what to skip), then records each
image's row as it streams back, once. Workers write every output atomically (temporary file, then rename) and the
same input always gives the same bytes, so a task retried after a worker died rewrites identical files and can
neither duplicate nor corrupt anything; a row that arrives twice is recorded once. An image whose row never comes
back (its task given up after the retries) is recorded as an error, which the next run redoes; if the Ray job
itself fails, the rows recorded so far stay and the same command resumes.

Needs ``ray[data]`` (``pip install 'ultralbm-edge[ray]'``), imported only when a run starts; on a cluster of several
machines ultralbm-edge installed on each, and the inputs and the output folder at the same paths on every machine
(a shared filesystem). The model is resolved and opened on the workers (a bundled name picks its form there).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .backends import open_backend
from .backends.base import parse_device
from .errors import UserError
from .files import OutputWriteError
from .imageio import ImageLimits, read_image
from .postprocess import PostprocessOptions
from .predict import Inferred, PredictOptions, PredictSummary, _finish, _load, _Loaded, load_failure, planned_run
from .predict import run_settings, stage_failure
from .run_folder import input_key

RAY_EXTRA = "pip install 'ultralbm-edge[ray]'"
# Row statuses only workers send: a write that failed (full disk, read-only folder) stops the run, as locally.
_WRITE_FAILED = "write_failed"


class DistributedError(UserError, RuntimeError):
    """Ray is missing, the cluster cannot run the job as asked, or the job failed (the message says what to do)."""


@dataclass
class ClusterOptions:
    """How the job is spread over the Ray cluster."""

    address: str | None = None  # None: RAY_ADDRESS if set, else a local instance started for this run
    actors: int | None = None  # inference actors; None: as many as the cluster's GPUs allow (GPU), else 1 (CPU)
    gpus_per_actor: float | None = None  # None: 1 with a CUDA device, 0 on the CPU; 0.5 puts two actors on a GPU
    cpus_per_actor: float = 1.0
    max_restarts: int = 3  # a dead inference actor is restarted (and its batch retried) this many times
    tasks: int | None = None  # concurrent decode and write tasks each; None: as many as the cluster's CPUs allow


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DistributedError(f"--ray needs Ray (ray[data]), which is not installed — {RAY_EXTRA}") from None
    return ray


def _connect(ray, address: str | None) -> bool:
    """Join the cluster (``address``, else RAY_ADDRESS) or start a local instance; True when this call started Ray."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(f"cannot start or join {where} ({first}) — check RAY_ADDRESS / `ray status`") from None
    return True


@dataclass
class _Plan:
    """What every worker needs to know, sent once with each stage."""

    model: str
    backend: str
    device: str
    threads: int | None
    compile: bool
    size: int = 0


def _open(plan: _Plan):
    return open_backend(plan.model, backend=plan.backend, threads=plan.threads, device=plan.device, compile=plan.compile)


def _describe(plan: _Plan, opts: PredictOptions) -> tuple[Any, PostprocessOptions, int, dict[str, str], str]:
    """Run where an inference actor runs: the run's settings as the actors will see them (a checkpoint's scan differs
    between CPU and GPU), the model's input size and what it runs on."""
    backend = _open(plan)
    settings, post = run_settings(backend, opts)
    return settings, post, backend.metadata.image_size, backend.describe(), backend.name


def _decode(batch: dict[str, np.ndarray], size: int, limits: ImageLimits) -> dict[str, np.ndarray]:
    """CPU task: read and preprocess each image; an unreadable one becomes an error row (zeros as its input)."""
    n = len(batch["path"])
    x = np.zeros((n, 3, size, size), np.float32)
    height, width = np.zeros(n, np.int64), np.zeros(n, np.int64)
    decode_ms, errors = np.zeros(n), np.full(n, "", dtype=object)
    for i, path in enumerate(batch["path"]):
        try:
            item = _load(Path(path), size, False, True, limits)
            x[i], height[i], width[i], decode_ms[i] = item.x, item.height, item.width, item.decode_ms
        except Exception as e:  # as locally: a bad image is reported, never fatal
            errors[i] = load_failure(Path(path), e)
    return {"path": batch["path"], "error": errors, "x": x, "height": height, "width": width, "decode_ms": decode_ms}


class InferenceActor:
    """One model on one device (a GPU Ray assigned to this actor, or the CPU), batches in, probability maps out."""

    def __init__(self, plan: _Plan) -> None:
        self.backend = _open(plan)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = batch.pop("x")
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        size = x.shape[-1]
        probs, infer_ms = np.zeros((len(ok), size, size), np.float32), np.zeros(len(ok))
        errors = np.array(batch["error"], dtype=object)
        if ok.any():
            t0 = time.perf_counter()
            try:
                probs[ok] = self.backend.run(x[ok])[:, 0]
                infer_ms[ok] = (time.perf_counter() - t0) * 1e3 / int(ok.sum())
            except Exception as e:  # as locally: the batch's images fail, the run goes on
                errors[ok] = [stage_failure(p, "inference", e) for p in batch["path"][ok]]
        return {**batch, "error": errors, "prob": probs, "infer_ms": infer_ms}


def _write(batch: dict[str, np.ndarray], out_dir: str, opts: PredictOptions, post: PostprocessOptions) -> dict[str, np.ndarray]:
    """CPU task: post-process and write each image's outputs (atomic, the same bytes on a retry); one JSON row each."""
    rows = []
    for i, text in enumerate(batch["path"]):
        path = Path(text)
        row: dict[str, Any] = {"path": str(path), "status": "error", "error": str(batch["error"][i])}
        if not row["error"]:
            try:
                rgb = read_image(path, opts.limits) if opts.overlay else None  # decoded again: images stay off the wire
                item = _Loaded(path, None, int(batch["height"][i]), int(batch["width"][i]), rgb, float(batch["decode_ms"][i]))
                row = _finish(item, Inferred(batch["prob"][i]), float(batch["infer_ms"][i]), Path(out_dir), opts, post)
            except OutputWriteError as e:
                row = {"path": str(path), "status": _WRITE_FAILED, "error": str(e)}
            except Exception as e:
                row["error"] = stage_failure(path, "postprocessing", e)
        rows.append(json.dumps(row))
    return {"row": np.array(rows, dtype=object)}


def _resources(ray, device: str, cluster: ClusterOptions) -> tuple[float, int]:
    """(GPUs per actor, actors), checked against what the cluster has."""
    on_gpu = parse_device(device)[0] == "cuda"
    gpus = cluster.gpus_per_actor if cluster.gpus_per_actor is not None else (1.0 if on_gpu else 0.0)
    if on_gpu and gpus <= 0:
        raise DistributedError(f"--device {device} with --gpus-per-actor {gpus}: CUDA actors need a share of a GPU (> 0)")
    have = ray.cluster_resources()
    if gpus > have.get("GPU", 0):
        raise DistributedError(
            f"the Ray cluster has {have.get('GPU', 0):g} GPUs, an actor needs {gpus:g} — use --device cpu, or add GPU nodes"
        )
    actors = cluster.actors or (max(1, int(have.get("GPU", 0) // gpus)) if gpus else 1)
    cpus = have.get("CPU", 0)
    if actors * cluster.cpus_per_actor >= cpus:
        raise DistributedError(
            f"{actors} inference actors x {cluster.cpus_per_actor:g} CPU take all {cpus:g} CPUs of the Ray cluster, none "
            "left to decode and write — use fewer --actors"
        )
    return gpus, actors


def predict_ray(
    inputs: list[Path | str],
    model: str | Path,
    out_dir: Path | str,
    opts: PredictOptions | None = None,
    cluster: ClusterOptions | None = None,
    *,
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
    compile: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = lambda _: None,
    actor_class: type = InferenceActor,
) -> PredictSummary:
    """``runtime.predict.predict`` on a Ray cluster: the same outputs, results.csv and resume rules (module docstring).

    ``model`` is opened on the workers (a file path must exist at that path on every node). ``actor_class`` (an
    ``InferenceActor`` subclass) lets a test or a custom deployment change what an actor does.
    """
    ray = _import_ray()
    opts = opts or PredictOptions()
    cluster = cluster or ClusterOptions()
    started = time.perf_counter()
    device = device or "cpu"
    gpus_kind = parse_device(device)[0] == "cuda"
    model_arg = str(model) if not Path(model).is_file() else str(Path(model).resolve())  # workers have their own cwd
    started_ray = _connect(ray, cluster.address)
    try:
        gpus, actors = _resources(ray, device, cluster)
        plan = _Plan(model_arg, backend, "cuda" if gpus_kind else "cpu", threads or (None if gpus else max(1, int(cluster.cpus_per_actor))), compile)
        remote = ray.remote(num_cpus=cluster.cpus_per_actor, num_gpus=gpus)(_describe)
        settings, post, plan.size, facts, name = ray.get(remote.remote(plan, opts))
        log(f"model {model_arg} on {name} ({facts.get('device', '')}): {actors} Ray actors x {gpus:g} GPU, batch {opts.batch_size}")
        with planned_run(inputs, settings, out_dir, opts, on_progress) as (book, todo):
            if todo:
                _stream(ray, [input_key(p) for p in todo], Path(out_dir).resolve(), opts, post, plan, cluster, gpus, actors, actor_class, book)
    finally:
        if started_ray:
            ray.shutdown()
    book.summary.seconds, book.summary.engine = time.perf_counter() - started, f"{name} on Ray"
    return book.summary


def _stream(ray, keys: list[str], out_dir: Path, opts: PredictOptions, post: PostprocessOptions, plan: _Plan,
            cluster: ClusterOptions, gpus: float, actors: int, actor_class: type, book) -> None:  # fmt: skip
    data = ray.data
    ctx = data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI shows its own
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per dataset on the user's terminal
    batch = max(1, opts.batch_size)
    tasks = {"compute": data.TaskPoolStrategy(size=cluster.tasks)} if cluster.tasks else {}
    ds = data.from_items([{"path": k} for k in keys], override_num_blocks=max(1, -(-len(keys) // batch)))
    ds = ds.map_batches(_decode, fn_kwargs={"size": plan.size, "limits": opts.limits}, batch_size=batch, batch_format="numpy", **tasks)
    with warnings.catch_warnings():  # Ray 2.60 names no other way to bound restarts (its default: forever)
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            actor_class, fn_constructor_kwargs={"plan": plan}, batch_size=batch, batch_format="numpy",
            compute=data.ActorPoolStrategy(size=actors), num_cpus=cluster.cpus_per_actor, num_gpus=gpus,
            max_restarts=cluster.max_restarts, max_task_retries=cluster.max_restarts,
        )  # fmt: skip
    ds = ds.map_batches(_write, fn_kwargs={"out_dir": str(out_dir), "opts": opts, "post": post}, batch_size=batch,
                        batch_format="numpy", **tasks)  # fmt: skip
    recorded: set[str] = set()
    try:
        for item in ds.iter_rows():
            row = json.loads(item["row"])
            if row["path"] in recorded:  # a retried task's second copy of a row
                continue
            if row["status"] == _WRITE_FAILED:
                raise OutputWriteError(row["error"])
            recorded.add(row["path"])
            if row["status"] == "ok":
                book.ok(row)
            else:
                book.fail(Path(row["path"]), row["error"])
    except (OutputWriteError, KeyboardInterrupt):
        raise
    except Exception as e:  # the Ray job failed beyond its retries
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise DistributedError(
            f"the Ray job stopped ({first.strip()[:300]}) — run the same command again: the {len(recorded)} images "
            "recorded are kept"
        ) from None
    for key in keys:
        if key not in recorded:
            book.fail(Path(key), f"{key}: no result came back from the Ray cluster — run the same command again to redo it")
