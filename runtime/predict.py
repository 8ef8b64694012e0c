"""Batch mask inference over files and folders: pipelined, batched, atomic, resumable, safe to interrupt.

Decoding and preprocessing run in a thread pool (OpenCV, simplejpeg and numpy release the GIL) ahead of batched
inference; postprocessing and writes run in the same pool while the next batch infers. Stages that feed a GPU use
worker processes instead, and the images, maps and masks cross in shared memory (``shared_slots``). The output folder is a
``RunFolder``: locked while a run writes, bound to the settings its masks were made with, and journalled in
results.csv as images finish. A bad image is recorded and never stops the others; an output that cannot be
written (full disk, read-only folder) stops the run at once with one clear error, and nothing unfinished is ever
counted as done.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import cv2
import numpy as np

from ultralbm_edge import __version__

from .backends import Backend
from .files import OutputWriteError, file_sha256, write_failure
from .imageio import DEFAULT_LIMITS, ImageLimits, ImageReadError, find_images, image_size, is_within, read_image, write_image, write_npy
from .postprocess import PostprocessOptions, clean_mask, full_size, mask_stats, overlay
from .preprocess import preprocess
from .report import Case, overlay_thumbnail, write_report
from .run_folder import RunFolder, RunSettings, input_key, input_stamp
from .shared_slots import SLOT_ALIGN, SharedArray, SlotPool, slot_layout_bytes

# Slots of shared memory per image of a batch, for worker processes: the batches decoding ahead, the one on the GPU
# and those being written. Too few, and decoding waits for writes to free one (10 instead of 5 per batch image:
# 1.32x the images/s on the H200, benchmarks/results/gpu_folder_h200.md). A slot is sized for the folder's first
# images (a 256-px image's pixels, map and mask take 0.5 MB, a PH2 image's 2 MB); the slots take at most
# _SLOT_MEMORY, a GPU pins them for the run (about 0.4 s per GB on the H200).
_SLOTS_PER_BATCH_IMAGE = 10
_SLOT_MEMORY = 1 << 30
_SLOT_BYTES_RANGE = (256 << 10, 8 << 20)  # an image larger than its slot (or past the range) travels pickled
_SIZE_SAMPLE = 64  # images whose headers size the slots
_DECODE_AHEAD_BATCHES = 3  # images decoding at most, in batches (bounds memory, and the wait for other tasks)
_IMAGES_PER_TASK = 16  # at most, for worker processes (a task's round trip costs the parent ~0.2 ms)
_worker_slots: SlotPool | None = None  # the parent's pool, inherited by each forked worker process


@dataclass
class PredictOptions:
    threshold: float | None = None  # None: the model's own threshold from its metadata
    save_probs: bool = False
    overlay: bool = False
    keep_largest: bool = True
    fill_holes: bool = True
    min_component_fraction: float = PostprocessOptions.min_component_fraction
    batch_size: int = 8
    workers: int = 2
    overwrite: bool = False  # redo every image (and accept new settings) instead of resuming
    limits: ImageLimits = DEFAULT_LIMITS


@dataclass
class PredictSummary:
    out_dir: Path
    results_csv: Path
    ok: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = ""  # what ran the model, for the closing line ("onnxruntime", "torch on Ray")

    @property
    def total(self) -> int:
        return self.ok + self.skipped + len(self.failed)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


@dataclass
class _Loaded:
    path: Path
    x: np.ndarray | None  # preprocessed, when the batch stages preprocess in the worker threads
    height: int
    width: int
    rgb: np.ndarray | SharedArray | None  # kept for overlays, and for stages that preprocess elsewhere
    decode_ms: float
    slot: int | None = None  # its slot of shared memory, when worker processes hand images over (SlotPool)


@dataclass
class Inferred:
    """One image's model output: the (S, S) probability map and, when the batch stages made them (on a GPU), the map
    at the image's size and its thresholded 0/1 mask."""

    prob: np.ndarray | SharedArray
    full_prob: np.ndarray | SharedArray | None = None
    raw_mask: np.ndarray | SharedArray | None = None


class BatchOutputs(Protocol):
    """A batch's model outputs, possibly still being computed: a GPU works through its queue while the main process
    hands the previous batch over to be written."""

    def ready(self) -> bool: ...

    def result(self) -> list[Inferred]:
        """The outputs, once computed (waits for them); raises what computing them raised."""
        ...


@dataclass
class Computed:
    """Outputs computed before ``launch`` returned."""

    outputs: list[Inferred]

    def ready(self) -> bool:
        return True

    def result(self) -> list[Inferred]:
        return self.outputs


class BatchStages:
    """How predict turns decoded images into model outputs. This default is the torch-free path: preprocessing in
    the worker threads (numpy), inference through ``backend.run``, resizing and thresholding in the workers
    (OpenCV). A backend may offer faster stages (``Backend.batch_stages``: preprocessing and resizing on its GPU)."""

    preprocess_in_workers = True
    # Worker processes instead of threads: for stages that feed thousands of images a second, the per-image Python
    # work (decoding checks, mask statistics, file writes) would otherwise queue on the GIL.
    worker_processes = False

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def infer(self, items: list[_Loaded], threshold: float) -> list[Inferred]:
        return [Inferred(p[0]) for p in self.backend.run(np.stack([item.x for item in items]))]

    def launch(self, items: list[_Loaded], threshold: float, slots: SlotPool | None, keep_pixels: bool) -> BatchOutputs:
        """Start inference on a batch. With ``slots`` (worker processes) the images were handed over in shared
        memory (``_Loaded.rgb`` may be a ``SharedArray``) and each image's outputs go into its slot, after its pixels
        when ``keep_pixels``. Stages that can overlap the next batch's hand-over return outputs not yet ready."""
        if slots is None:
            return Computed(self.infer(items, threshold))
        refs = [item.rgb for item in items]
        for item in items:
            item.rgb = slots.get(item.rgb)  # a view of the shared memory: the pixels are read in place
        outputs = self.infer(items, threshold)
        for item, ref, out in zip(items, refs, outputs):
            if item.slot is not None:
                keep = ref if keep_pixels and isinstance(ref, SharedArray) else None
                out.prob, out.full_prob, out.raw_mask = slots.place(item.slot, [out.prob, out.full_prob, out.raw_mask], after=keep)
        return Computed(outputs)

    def close(self, slots: SlotPool | None) -> None:
        """The run is over (or stopped): nothing may still use ``slots``."""

    def slot_bytes(self, height: int, width: int, size: int, keep_pixels: bool) -> int:
        """Shared memory one image of ``height`` x ``width`` needs in its slot (worker processes): its pixels, then
        what ``launch`` places there (the model's map, the full-size map and the mask)."""
        return slot_layout_bytes([(height, width, 3), (size, size, 4), (height, width, 4), (height, width, 1)])


def _outputs(out_dir: Path, stem: str, opts: PredictOptions) -> list[Path]:
    """The mask first; the optional outputs asked for."""
    paths = [out_dir / "masks" / f"{stem}.png"]
    if opts.save_probs:
        paths.append(out_dir / "probs" / f"{stem}.npy")
    if opts.overlay:
        paths.append(out_dir / "overlays" / f"{stem}.jpg")
    return paths


def _load(path: Path, size: int, keep_rgb: bool, preprocess_here: bool, limits: ImageLimits) -> _Loaded:
    t0 = time.perf_counter()
    rgb = read_image(path, limits)
    x = preprocess(rgb, size) if preprocess_here else None
    keep = keep_rgb or not preprocess_here
    return _Loaded(path, x, rgb.shape[0], rgb.shape[1], rgb if keep else None, (time.perf_counter() - t0) * 1e3)


def _write_outputs(item: _Loaded, out: Inferred, out_dir: Path, opts: PredictOptions, post: PostprocessOptions) -> tuple[np.ndarray, np.ndarray, str]:
    """Write an image's outputs; its mask, full-size map and the mask file's sha256."""
    stem = item.path.stem
    full_prob = out.full_prob if out.full_prob is not None else full_size(out.prob, item.height, item.width)
    raw = out.raw_mask if out.raw_mask is not None else (full_prob >= post.threshold).astype(np.uint8)
    mask = clean_mask(raw, post)
    try:
        # The folders' entries are synced once when the run closes (RunFolder); each file's content before its rename.
        if opts.save_probs:
            write_npy(out_dir / "probs" / f"{stem}.npy", out.prob.astype(np.float32), sync_folder=False)
        if opts.overlay and item.rgb is not None:
            write_image(out_dir / "overlays" / f"{stem}.jpg", overlay(item.rgb, mask), sync_folder=False)
        mask_sha256 = write_image(out_dir / "masks" / f"{stem}.png", mask, sync_folder=False)  # last: a complete mask marks it done
    except OSError as e:
        raise write_failure(e, f"the outputs of {item.path.name} in {out_dir}") from None
    return mask, full_prob, mask_sha256


def _finish(item: _Loaded, out: Inferred, infer_ms: float, out_dir: Path, opts: PredictOptions, post: PostprocessOptions) -> dict:
    t0 = time.perf_counter()
    mask, full_prob, mask_sha256 = _write_outputs(item, out, out_dir, opts, post)
    size, mtime = input_stamp(item.path)
    return {"path": input_key(item.path), "status": "ok", "error": "", "width": item.width, "height": item.height,
            **mask_stats(mask, full_prob), "decode_ms": round(item.decode_ms, 2), "infer_ms": round(infer_ms, 2),
            "post_ms": round((time.perf_counter() - t0) * 1e3, 2), "input_bytes": size, "input_mtime_ns": mtime,
            "mask_sha256": mask_sha256}  # fmt: skip


def _model_facts(backend: Backend) -> dict:
    meta = backend.metadata
    facts = {"variant": meta.variant, "scan_strategy": meta.scan_strategy, "precision": meta.precision,
             "image_size": meta.image_size, "preprocessing": meta.preprocessing,
             "source_checkpoint_sha256": meta.source_checkpoint_sha256}  # fmt: skip
    # Only when on: folders written without test-time augmentation keep the settings they were written with.
    if backend.test_time_augmentation:
        facts["test_time_augmentation"] = backend.test_time_augmentation
    return facts


class RunBook:
    """One predict call's bookkeeping: rows go to the journal from this (the calling) thread only."""

    def __init__(self, run: RunFolder, summary: PredictSummary, total: int, on_progress: Callable[[int, int], None] | None) -> None:
        self.run, self.summary, self.total, self.on_progress = run, summary, total, on_progress

    def ok(self, row: dict, flush: bool = True) -> None:
        self.run.record(row, flush)
        self.summary.ok += 1
        self._progress()

    def flush(self) -> None:
        self.run.record_flush()

    def fail(self, path: Path, message: str) -> None:
        self.run.record({"path": input_key(path) if path.exists() else str(path), "status": "error", "error": message})
        self.summary.failed.append((str(path), message))
        self._progress()

    def skip(self) -> None:
        self.summary.skipped += 1
        self._progress()

    def _progress(self) -> None:
        if self.on_progress:
            self.on_progress(self.summary.total, self.total)


def predict(
    inputs: list[Path | str],
    backend: Backend,
    out_dir: Path | str,
    opts: PredictOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictSummary:
    """Segment every image in ``inputs`` (files and folders, recursive) with ``backend`` into ``out_dir``.

    Writes ``masks/<stem>.png`` (original size, 0/255), optionally ``probs/<stem>.npy`` (the model's float32
    output before postprocessing) and ``overlays/<stem>.jpg``, ``manifest.json`` and ``results.csv`` (one row per
    image). Images finished by an earlier run with the same settings are skipped (see ``RunFolder``).
    """
    opts = opts or PredictOptions()
    started = time.perf_counter()
    settings, post = run_settings(backend, opts)
    stages = backend.batch_stages(opts.batch_size) or BatchStages(backend)
    with planned_run(inputs, settings, out_dir, opts, on_progress) as (book, todo):
        _pipeline(todo, stages, backend.metadata.image_size, Path(out_dir), opts, post, book)
    book.summary.seconds, book.summary.engine = time.perf_counter() - started, backend.name
    return book.summary


def run_settings(backend: Backend, opts: PredictOptions) -> tuple[RunSettings, PostprocessOptions]:
    """What the masks of a run with ``backend`` and ``opts`` depend on (the manifest), and the post-processing."""
    meta = backend.metadata
    post = PostprocessOptions(meta.threshold if opts.threshold is None else opts.threshold, opts.keep_largest,
                              opts.fill_holes, opts.min_component_fraction)  # fmt: skip
    settings = RunSettings(file_sha256(backend.path), _model_facts(backend), post.threshold, post.keep_largest,
                           post.fill_holes, post.min_component_fraction, tool_version=__version__)  # fmt: skip
    return settings, post


@contextmanager
def planned_run(
    inputs: list[Path | str], settings: RunSettings, out_dir: Path | str, opts: PredictOptions,
    on_progress: Callable[[int, int], None] | None,
) -> Iterator[tuple[RunBook, list[Path]]]:  # fmt: skip
    """The output folder opened as a ``RunFolder`` (locked, manifest checked) and the plan: the images to segment
    now, every other input already reported (skipped as done, or refused). Rows are recorded through the ``RunBook``
    from the calling thread only; every way of running predict (local, ``runtime.distributed``) starts here."""
    out_dir = Path(out_dir)
    paths = find_images([Path(p) for p in inputs], exclude=out_dir)
    with RunFolder(out_dir, settings, opts.overwrite) as run:
        book = RunBook(run, PredictSummary(out_dir, run.results_csv), len(paths), on_progress)
        yield book, _plan(paths, out_dir, opts, run, book)


def _plan(paths: list[Path], out_dir: Path, opts: PredictOptions, run: RunFolder, book: RunBook) -> list[Path]:
    """The inputs to segment now; the others are reported (outputs inside the output folder, colliding names) or
    skipped (done by an earlier run)."""
    todo: list[Path] = []
    seen: dict[str, Path] = {}
    out_real = os.path.realpath(out_dir)
    real_folders: dict[str, str] = {}
    for p in paths:
        stem = p.stem
        if is_within(_real_path(os.fspath(p), real_folders), out_real):
            book.fail(p, f"{p}: is inside the output folder {out_dir}; outputs are never inputs — move it out or choose another -o")
        elif stem in seen:
            book.fail(p, f"{p}: same file name stem as {seen[stem]}: outputs would collide — rename one of them")
        else:
            seen[stem] = p
            if not opts.overwrite and run.is_done(p, outputs := _outputs(out_dir, stem, opts), outputs[0]):
                book.skip()
            else:
                todo.append(p)
    return todo


def _real_path(path: str, real_folders: dict[str, str]) -> str:
    """``os.path.realpath(path)``, with each folder resolved once (``real_folders`` caches them): one ``lstat`` per
    file instead of one per component of its path."""
    folder, name = os.path.split(path)
    if name in ("", ".", "..") or os.path.islink(path):
        return os.path.realpath(path)
    if folder not in real_folders:
        real_folders[folder] = os.path.realpath(folder)
    return os.path.join(real_folders[folder], name)


def _load_many(paths: list[Path], size: int, keep_rgb: bool, preprocess_here: bool, limits: ImageLimits,
               slots: list[int | None] | None = None) -> list[_Loaded | str]:  # fmt: skip
    """Each path's decoded image, or the one-line reason it could not be used (one task for several images: a
    worker process's per-task overhead is paid once). With ``slots`` (in a worker process) each image's pixels go
    into its slot of shared memory."""
    loaded: list[_Loaded | str] = []
    for i, p in enumerate(paths):
        try:
            item = _load(p, size, keep_rgb, preprocess_here, limits)
        except Exception as e:  # a bad image, or an unexpected decoder failure: reported, never fatal
            loaded.append(load_failure(p, e))
            continue
        if slots is not None:
            item.slot = slots[i]
            if _worker_slots is not None and item.rgb is not None:
                (item.rgb,) = _worker_slots.place(slots[i], [item.rgb])
        loaded.append(item)
    return loaded


def _finish_many(jobs: list[tuple[_Loaded, Inferred]], infer_ms: float, out_dir: Path, opts: PredictOptions,
                 post: PostprocessOptions) -> list[dict | str]:  # fmt: skip
    """Each image's row, or the reason its post-processing failed; a write error stops the run (raised)."""
    rows: list[dict | str] = []
    for item, out in jobs:
        if _worker_slots is not None:  # arrays in shared memory (worker processes): views of it, nothing copied
            get = _worker_slots.get
            item.rgb, out.prob, out.full_prob, out.raw_mask = get(item.rgb), get(out.prob), get(out.full_prob), get(out.raw_mask)
        try:
            rows.append(_finish(item, out, infer_ms, out_dir, opts, post))
        except OutputWriteError:
            raise
        except Exception as e:
            rows.append(stage_failure(item.path, "postprocessing", e))
    return rows


def _slot_pool(todo: list[Path], stages: BatchStages, size: int, batch_size: int, chunk: int, keep_pixels: bool) -> SlotPool:
    """Shared memory for the images in flight: slots as large as the largest of the first images needs (their
    headers read), as many as ``_SLOTS_PER_BATCH_IMAGE`` per batch image within ``_SLOT_MEMORY``, and no more than
    there are images (a small folder does not pin memory it never uses)."""
    sizes = [image_size(p) for p in todo[:_SIZE_SAMPLE]]
    needed = max((stages.slot_bytes(h, w, size, keep_pixels) for h, w in sizes if h > 0 and w > 0), default=0)
    slot_bytes = min(max(-(-needed // SLOT_ALIGN) * SLOT_ALIGN, _SLOT_BYTES_RANGE[0]), _SLOT_BYTES_RANGE[1])
    count = min(_SLOTS_PER_BATCH_IMAGE * batch_size, max(_SLOT_MEMORY // slot_bytes, batch_size), len(todo)) + chunk
    return SlotPool(count, slot_bytes)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pipeline(todo: list[Path], stages: BatchStages, size: int, out_dir: Path, opts: PredictOptions, post: PostprocessOptions,
              book: RunBook) -> None:  # fmt: skip
    batch_size = max(1, opts.batch_size)
    workers = max(1, opts.workers)
    # Worker processes get several images per task (a task's round trip costs the parent ~0.2 ms), and their images
    # cross in shared memory; threads get one image per task (handing it over costs nothing).
    chunk = max(1, min(_IMAGES_PER_TASK, batch_size // 4)) if stages.worker_processes else 1
    slots = _slot_pool(todo, stages, size, batch_size, chunk, opts.overlay) if stages.worker_processes else None
    with _worker_pool(stages, workers, slots) as pool:
        hand_over = _HandOver(stages, slots, chunk, pool, out_dir, opts, post, book)
        loads: deque[tuple[list[Path], list[int | None] | None, Future]] = deque()
        pending = deque(_chunks(todo, chunk))
        in_flight = 0
        ready: deque[_Loaded] = deque()
        writes: list[_Writing] = []
        launched: _Launched | None = None  # the batch the model is working on, not yet handed over

        def refill() -> None:
            # Keep a few batches of decoding in flight ahead of inference, bounded for memory (and by the slots).
            nonlocal in_flight
            while pending and in_flight < _DECODE_AHEAD_BATCHES * batch_size and (slots is None or slots.free >= len(pending[0])):
                paths = pending.popleft()
                held = [slots.acquire() for _ in paths] if slots is not None else None
                loads.append((paths, held, pool.submit(_load_many, paths, size, opts.overlay, stages.preprocess_in_workers, opts.limits, held)))
                in_flight += len(paths)

        try:
            refill()
            while loads or ready or pending:
                if not loads and not ready:  # every slot is held by an image in inference or being written: wait for one
                    writes += hand_over(launched)
                    launched = None
                    writes = _collect(writes, book, slots, block=False, wait_one=True)
                    refill()
                    continue
                while loads and len(ready) < batch_size:
                    paths, held, fut = loads.popleft()
                    in_flight -= len(paths)
                    for i, (p, loaded) in enumerate(zip(paths, fut.result())):
                        if isinstance(loaded, str):
                            book.fail(p, loaded)
                            if slots is not None and held is not None:
                                slots.release(held[i])
                        else:
                            ready.append(loaded)
                    refill()
                batch = [ready.popleft() for _ in range(min(batch_size, len(ready)))]
                if batch:
                    # The next batch is started before the last one is handed over: the GPU computes while this
                    # thread sends the last batch's images to be written.
                    started = hand_over.launch(batch)
                    writes += hand_over(launched)
                    launched = started
                    if launched is not None and launched.outputs.ready():
                        writes += hand_over(launched)
                        launched = None
                writes = _collect(writes, book, slots, block=False)
            writes += hand_over(launched)
            launched = None
            _collect(writes, book, slots, block=True)
        except OutputWriteError:
            for fut in [load[2] for load in loads] + [w.future for w in writes]:
                fut.cancel()
            raise
        finally:
            stages.close(slots)


@dataclass
class _Writing:
    paths: list[Path]
    slots: list[int | None]
    future: Future


@dataclass
class _Launched:
    batch: list[_Loaded]
    pixels: list[np.ndarray | SharedArray | None]  # each image's decoded pixels as the worker handed them over
    outputs: BatchOutputs
    started: float


@dataclass
class _HandOver:
    """Starts batches on the model, and hands each batch's outputs to the pool to be written."""

    stages: BatchStages
    slots: SlotPool | None
    chunk: int
    pool: Executor
    out_dir: Path
    opts: PredictOptions
    post: PostprocessOptions
    book: RunBook

    def launch(self, batch: list[_Loaded]) -> _Launched | None:
        pixels = [item.rgb for item in batch]
        started = time.perf_counter()
        try:
            outputs = self.stages.launch(batch, self.post.threshold, self.slots, self.opts.overlay)
        except Exception as e:
            self._fail(batch, e)
            return None
        return _Launched(batch, pixels, outputs, started)

    def __call__(self, launched: _Launched | None) -> list[_Writing]:
        """Wait for a launched batch's outputs and send its images to be written (nothing for None)."""
        if launched is None:
            return []
        try:
            outputs = launched.outputs.result()
        except Exception as e:
            self._fail(launched.batch, e)
            return []
        # Per image: from the start of its batch on the model until its outputs were ready.
        infer_ms = (time.perf_counter() - launched.started) * 1e3 / len(launched.batch)
        for item, pixels in zip(launched.batch, launched.pixels):
            item.rgb = pixels if self.opts.overlay else None  # not needed for writing: not sent to a worker process
        return [_Writing([item.path for item, _ in jobs], [item.slot for item, _ in jobs],
                         self.pool.submit(_finish_many, jobs, infer_ms, self.out_dir, self.opts, self.post))
                for jobs in _chunks(list(zip(launched.batch, outputs)), self.chunk)]  # fmt: skip

    def _fail(self, batch: list[_Loaded], error: Exception) -> None:
        for item in batch:
            self.book.fail(item.path, stage_failure(item.path, "inference", error))
            if self.slots is not None:
                self.slots.release(item.slot)


def load_failure(path: Path, error: Exception) -> str:
    """The results.csv message of an image that could not be read."""
    return str(error) if isinstance(error, ImageReadError) else f"{path}: {type(error).__name__}: {error}"


def stage_failure(path: Path | str, stage: str, error: Exception) -> str:
    """The results.csv message of an image whose inference or postprocessing failed."""
    return f"{path}: {stage} failed ({type(error).__name__}: {error})"


def _collect(writes: list[_Writing], book: RunBook, slots: SlotPool | None, block: bool, wait_one: bool = False) -> list[_Writing]:
    """Journal the finished writes (one flush for all of them) and free their slots; return the unfinished.
    ``wait_one``: first wait until one write finishes."""
    if wait_one and writes:
        wait([w.future for w in writes], return_when=FIRST_COMPLETED)
    left = []
    try:
        for w in writes:
            if not block and not w.future.done():
                left.append(w)
                continue
            for path, row in zip(w.paths, w.future.result()):  # a write error (OutputWriteError) is raised here
                if isinstance(row, str):
                    book.fail(path, row)
                else:
                    book.ok(row, flush=False)
            if slots is not None:
                for slot in w.slots:
                    slots.release(slot)
    finally:
        book.flush()
    return left


def _worker_pool(stages: BatchStages, workers: int, slots: SlotPool | None) -> Executor:
    if not stages.worker_processes:
        return ThreadPoolExecutor(max_workers=workers)
    # fork, as PyTorch's DataLoader workers: the children never touch the parent's CUDA context, and unlike spawn or
    # forkserver a fork does not re-run the caller's main script; they inherit the shared slots (never pickled).
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker, initargs=(slots,))
    # OpenCV's thread pool does not survive a fork: a child that reconfigures it can wait forever on a lock that a
    # parent thread held (seen after a CPU run in the same process). So the children are forked, all of them at the
    # first task, while the parent's OpenCV keeps to one thread; they inherit that setting and never change it.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        pool.submit(int).result()
    finally:
        cv2.setNumThreads(threads)
    return pool


def _init_worker(slots: SlotPool | None) -> None:
    global _worker_slots
    _worker_slots = slots


def iter_failures(summary: PredictSummary) -> Iterator[str]:
    for path, message in summary.failed:
        yield message if message.startswith(path) else f"{path}: {message}"


def prediction_report(summary: PredictSummary, cases: int = 60, limits: ImageLimits = DEFAULT_LIMITS) -> Path:
    """``report.html`` in the output folder: the counts, the ``cases`` least confident masks (empty ones first, then
    the lowest mean probability inside the lesion) drawn on their images, and every image's row."""
    rows = list(RunFolder.read_results(summary.results_csv).values())
    ok = [r for r in rows if r["status"] == "ok"]

    def confidence(row: dict) -> float:
        return float(row["mean_prob_in_lesion"]) if row.get("mean_prob_in_lesion") else -1.0

    drawn = []
    for row in sorted(ok, key=confidence)[:cases]:
        image = Path(row["path"])
        mask_path = summary.out_dir / "masks" / f"{image.stem}.png"
        try:
            rgb, mask = read_image(image, limits), cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        except ImageReadError:
            continue  # the input was moved or changed since: its row stays in the table below
        facts = {"lesion": f"{float(row['lesion_fraction']) * 100:.1f} % of the image",
                 "mean probability in lesion": row.get("mean_prob_in_lesion") or "(empty mask)"}  # fmt: skip
        drawn.append(Case(image.name, overlay_thumbnail(rgb, mask), facts))
    failed = [r for r in rows if r["status"] != "ok"]
    summary_rows = [{"images": len(rows), "segmented (ok)": len(ok), "failed": len(failed), "output": str(summary.out_dir)}]
    table = [{"image": Path(r["path"]).name, "status": r["status"], "lesion fraction": r.get("lesion_fraction", ""),
              "mean prob in lesion": r.get("mean_prob_in_lesion", ""), "error": r.get("error", "")} for r in failed + ok]  # fmt: skip
    return write_report(
        summary.out_dir / "report.html", "ultralbm-edge predict", f"{len(rows)} images in {summary.out_dir}", summary_rows,
        drawn, f"The {len(drawn)} least confident masks (empty first, then lowest mean probability in the lesion)",
        table, "Every image (failures first)",
    )  # fmt: skip
