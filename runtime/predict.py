"""Batch mask inference over files and folders: pipelined, batched, atomic, resumable.

Decoding and preprocessing run in a thread pool (OpenCV and numpy release the GIL) ahead of batched inference;
postprocessing and writes run in the same pool while the next batch infers. Results are reported in input order.
A bad image is recorded (results.csv and the summary) and never stops the others.
"""

from __future__ import annotations

import csv
import io
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .backends import Backend
from .files import remove_stale_temporaries, write_text_atomic
from .imageio import ImageReadError, find_images, read_image, write_image, write_npy
from .postprocess import PostprocessOptions, mask_stats, overlay, probability_to_mask
from .preprocess import preprocess

CSV_FIELDS = [
    "path", "status", "error", "width", "height", "lesion_area_px", "lesion_fraction", "bbox_xywh",
    "mean_prob_in_lesion", "ms",
]  # fmt: skip


@dataclass
class PredictOptions:
    threshold: float | None = None  # None: the model's own threshold from its metadata
    save_probs: bool = False
    overlay: bool = False
    keep_largest: bool = True
    fill_holes: bool = True
    batch_size: int = 8
    workers: int = 2
    resume: bool = True


@dataclass
class PredictSummary:
    out_dir: Path
    results_csv: Path
    ok: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.ok + self.skipped + len(self.failed)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


@dataclass
class _Loaded:
    path: Path
    x: np.ndarray
    height: int
    width: int
    rgb: np.ndarray | None  # kept only for overlays
    ms: float


def _outputs(out_dir: Path, stem: str, opts: PredictOptions) -> list[Path]:
    paths = [out_dir / "masks" / f"{stem}.png"]
    if opts.save_probs:
        paths.append(out_dir / "probs" / f"{stem}.npy")
    if opts.overlay:
        paths.append(out_dir / "overlays" / f"{stem}.jpg")
    return paths


def _load(path: Path, size: int, keep_rgb: bool) -> _Loaded:
    t0 = time.perf_counter()
    rgb = read_image(path)
    x = preprocess(rgb, size)
    return _Loaded(path, x, rgb.shape[0], rgb.shape[1], rgb if keep_rgb else None, (time.perf_counter() - t0) * 1e3)


def _finish(item: _Loaded, prob: np.ndarray, infer_ms: float, out_dir: Path, opts: PredictOptions, post: PostprocessOptions) -> dict:
    t0 = time.perf_counter()
    stem = item.path.stem
    mask = probability_to_mask(prob, item.height, item.width, post)
    full_prob = cv2.resize(prob, (item.width, item.height), interpolation=cv2.INTER_LINEAR) if prob.shape != mask.shape else prob
    if opts.save_probs:
        write_npy(out_dir / "probs" / f"{stem}.npy", prob.astype(np.float32))
    if opts.overlay and item.rgb is not None:
        drawn = overlay(item.rgb, mask)
        write_image(out_dir / "overlays" / f"{stem}.jpg", drawn)
    write_image(out_dir / "masks" / f"{stem}.png", mask)  # last: its presence marks the image as done
    ms = item.ms + infer_ms + (time.perf_counter() - t0) * 1e3
    return {"path": str(item.path), "status": "ok", "error": "", "width": item.width, "height": item.height,
            **mask_stats(mask, full_prob), "ms": round(ms, 2)}  # fmt: skip


def _error_row(path: Path, message: str) -> dict:
    return {"path": str(path), "status": "error", "error": message}


def predict(
    inputs: list[Path | str],
    backend: Backend,
    out_dir: Path | str,
    opts: PredictOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictSummary:
    """Segment every image in ``inputs`` (files and folders, recursive) with ``backend`` into ``out_dir``.

    Writes ``masks/<stem>.png`` (original size, 0/255), optionally ``probs/<stem>.npy`` (the model's float32
    output before postprocessing) and ``overlays/<stem>.jpg``, and ``results.csv`` with one row per input.
    """
    opts = opts or PredictOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # a killed run's half-written files; never counted as outputs
    started = time.perf_counter()
    meta = backend.metadata
    post = PostprocessOptions(
        threshold=meta.threshold if opts.threshold is None else opts.threshold,
        keep_largest=opts.keep_largest,
        fill_holes=opts.fill_holes,
    )
    paths = find_images([Path(p) for p in inputs])
    summary = PredictSummary(out_dir, out_dir / "results.csv")
    rows: dict[int, dict] = {}
    todo: list[tuple[int, Path]] = []
    seen: dict[str, Path] = {}
    for i, p in enumerate(paths):
        if p.stem in seen:
            rows[i] = _error_row(p, f"same file name stem as {seen[p.stem]}: outputs would collide — rename one of them")
        elif opts.resume and all(o.is_file() for o in _outputs(out_dir, p.stem, opts)):
            seen[p.stem] = p
            rows[i] = {"path": str(p), "status": "skipped", "error": "outputs already complete (--resume)"}
        else:
            seen[p.stem] = p
            todo.append((i, p))
    if on_progress:
        on_progress(len(rows), len(paths))

    batch_size = max(1, opts.batch_size)
    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        loads: deque[tuple[int, Future]] = deque()
        pending = iter(todo)
        writes: list[tuple[int, Future]] = []

        def refill() -> None:
            # Keep a few batches of decoding in flight ahead of inference, bounded for memory.
            while len(loads) < 3 * batch_size:
                nxt = next(pending, None)
                if nxt is None:
                    return
                idx, p = nxt
                loads.append((idx, pool.submit(_load, p, meta.image_size, opts.overlay)))

        refill()
        while loads:
            batch: list[tuple[int, _Loaded]] = []
            while loads and len(batch) < batch_size:
                idx, fut = loads.popleft()
                try:
                    batch.append((idx, fut.result()))
                except ImageReadError as e:
                    rows[idx] = _error_row(paths[idx], str(e))
                except Exception as e:  # an unexpected decoder failure still must not stop the run
                    rows[idx] = _error_row(paths[idx], f"{paths[idx]}: {type(e).__name__}: {e}")
                refill()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                probs = backend.run(np.stack([item.x for _, item in batch]))
            except Exception as e:
                for idx, item in batch:
                    rows[idx] = _error_row(item.path, f"{item.path}: inference failed ({type(e).__name__}: {e})")
                continue
            infer_ms = (time.perf_counter() - t0) * 1e3 / len(batch)
            for (idx, item), prob in zip(batch, probs):
                writes.append((idx, pool.submit(_finish, item, prob[0], infer_ms, out_dir, opts, post)))
            writes = _collect(writes, rows, paths, block=False)
            if on_progress:
                on_progress(len(rows), len(paths))
        _collect(writes, rows, paths, block=True)
    if on_progress:
        on_progress(len(rows), len(paths))

    for i in range(len(paths)):
        status = rows[i]["status"]
        if status == "ok":
            summary.ok += 1
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.failed.append((str(paths[i]), rows[i]["error"]))
    _write_csv(summary.results_csv, [rows[i] for i in range(len(paths))])
    summary.seconds = time.perf_counter() - started
    return summary


def _collect(writes: list[tuple[int, Future]], rows: dict[int, dict], paths: list[Path], block: bool) -> list[tuple[int, Future]]:
    left = []
    for idx, fut in writes:
        if not block and not fut.done():
            left.append((idx, fut))
            continue
        try:
            rows[idx] = fut.result()
        except Exception as e:
            rows[idx] = _error_row(paths[idx], f"{paths[idx]}: writing outputs failed ({type(e).__name__}: {e})")
    return left


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def iter_failures(summary: PredictSummary) -> Iterator[str]:
    for path, message in summary.failed:
        yield message if message.startswith(path) else f"{path}: {message}"
