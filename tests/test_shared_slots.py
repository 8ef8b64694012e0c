"""Images handed between worker processes and the parent through shared memory (runtime.shared_slots), as the GPU
stages do: the same outputs as the thread pool's, whatever fits a slot or not, with bad images and slots reused."""

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from ultralbm_edge.runtime import predict as predict_module
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.files import OutputWriteError
from ultralbm_edge.runtime.predict import BatchStages, Inferred, PredictOptions, predict
from ultralbm_edge.runtime.preprocess import preprocess
from ultralbm_edge.runtime.shared_slots import SLOT_ALIGN, SharedArray, SlotPool, slot_layout_bytes

from conftest import remount
from run_outputs import assert_same_outputs


def test_slot_pool_places_what_fits_and_keeps_what_it_is_asked_to():
    pool = SlotPool(2, 1000)
    a, b = np.arange(100, dtype=np.float32), np.ones((10, 10), np.uint8)
    ref_a, ref_b, too_big = pool.place(1, [a, b, np.zeros(1000, np.uint8)])
    assert isinstance(ref_a, SharedArray) and isinstance(ref_b, SharedArray) and isinstance(too_big, np.ndarray)
    assert 1000 <= ref_a.offset and ref_b.end <= 2000  # inside slot 1
    np.testing.assert_array_equal(pool.get(ref_a), a)
    (ref_c,) = pool.place(1, [np.full(50, 7, np.uint8)], after=ref_a)  # b may be overwritten, a may not
    np.testing.assert_array_equal(pool.get(ref_a), a)
    assert ref_c.offset >= ref_a.end and (pool.get(ref_c) == 7).all()
    assert pool.get(None) is None and pool.get(a) is a
    assert [pool.acquire(), pool.acquire(), pool.acquire()] == [0, 1, None]
    pool.release(1)
    assert pool.free == 1


class _ProcessStages(BatchStages):
    """The default stages' arithmetic, with the GPU stages' hand-over: decoding in worker processes, the pixels
    preprocessed in the parent, maps and masks back to the workers to be written."""

    preprocess_in_workers = False
    worker_processes = True

    def infer(self, items, threshold):
        x = np.stack([preprocess(item.rgb, self.backend.metadata.image_size) for item in items])
        return [Inferred(p[0]) for p in self.backend.run(x)]


class _Deferred:
    """Outputs computed only when asked for, as a GPU's queue would: the pipeline must not read them sooner."""

    def __init__(self, compute):
        self.compute, self.asked = compute, False

    def ready(self):
        return False

    def result(self):
        self.asked = True
        return self.compute()


class _QueuedStages(_ProcessStages):
    """Like the GPU stages: ``launch`` only queues the batch, and the next batch is launched before this one's outputs
    are asked for. Records the order of launches and hand-overs."""

    def __init__(self, backend):
        super().__init__(backend)
        self.events, self.closed = [], 0

    def launch(self, items, threshold, slots, keep_pixels):
        pixels = [item.rgb for item in items]
        batch = len([e for e in self.events if e == "launch"])
        self.events.append("launch")

        def compute():
            self.events.append(f"result {batch}")
            for item, rgb in zip(items, pixels):
                item.rgb = rgb  # as handed over: launch's caller may have changed the items since
            return super(_QueuedStages, self).launch(items, threshold, slots, keep_pixels).result()

        return _Deferred(compute)

    def close(self, slots):
        self.closed += 1


@pytest.mark.parametrize("stages", [_ProcessStages, _QueuedStages])
@pytest.mark.parametrize("overlay", [False, True])
def test_worker_processes_through_shared_memory_write_what_threads_write(onnx_model, isic_val, ph2_val_images, tmp_path, monkeypatch, overlay, stages):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((isic_val / "images").glob("*.jpg"))[:14] + sorted(ph2_val_images.glob("*.jpg"))[:3]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "truncated.jpg").write_bytes((isic_val / "images" / "ISIC_0000006.jpg").read_bytes()[:3000])
    # A 256-px image's pixels, map and mask fit a slot of 600 KB; a PH2 image's pixels (1.3 MB) do not and travel
    # pickled. Batch 3: 16 slots for 18 images, so slots are waited for and reused.
    monkeypatch.setattr(predict_module, "_SLOT_BYTES_RANGE", (600_000, 600_000))  # not sized for the PH2 images
    monkeypatch.setattr(predict_module, "_SLOTS_PER_BATCH_IMAGE", 5)
    backend = open_backend(onnx_model)
    opts = PredictOptions(batch_size=3, workers=2, save_probs=True, overlay=overlay)
    threads = predict([images], backend, tmp_path / "threads", opts)
    process_stages = stages(backend)
    backend.batch_stages = lambda batch_size=8: process_stages
    shared_in, shared_out = [], []  # what crossed in shared memory (counted in this, the parent, process)
    launch, place = stages.launch, SlotPool.place
    monkeypatch.setattr(stages, "launch", lambda self, batch, *a: shared_in.extend(isinstance(i.rgb, SharedArray) for i in batch) or launch(self, batch, *a))
    monkeypatch.setattr(SlotPool, "place", lambda self, *a, **k: (r := place(self, *a, **k), shared_out.extend(r))[0])
    processes = predict([images], backend, tmp_path / "processes", opts)
    monkeypatch.undo()
    assert sum(shared_in) == 14  # the 256-px images' pixels; the PH2 images' were pickled
    assert sum(isinstance(x, SharedArray) for x in shared_out) == 17  # every map (these stages make no mask)
    assert (threads.ok, len(threads.failed)) == (processes.ok, len(processes.failed)) == (17, 1)
    assert_same_outputs(tmp_path / "threads", tmp_path / "processes", ["masks", "probs"] + (["overlays"] if overlay else []), 17)
    if stages is _QueuedStages:
        # 17 images in batches of 3 (6 batches), outputs asked for in order, each after its launch; the first batch's
        # only after the second one was launched (later ones too, unless every slot is in use: then the batch on
        # the GPU is handed over first, to free slots). The run ends by closing the stages once.
        events = process_stages.events
        assert events.count("launch") == 6 and [e for e in events if e != "launch"] == [f"result {k}" for k in range(6)]
        assert events[:3] == ["launch", "launch", "result 0"]
        assert all(events.index(f"result {k}") > [i for i, e in enumerate(events) if e == "launch"][k] for k in range(6))
        assert process_stages.closed == 1


class _FailingBatch(_QueuedStages):
    """The second batch fails when its outputs are asked for (as a GPU error surfaces at the batch's event)."""

    def launch(self, items, threshold, slots, keep_pixels):
        outputs = super().launch(items, threshold, slots, keep_pixels)
        if len(self.events) == 2:
            outputs.compute = lambda: (_ for _ in ()).throw(RuntimeError("device lost"))
        return outputs


def test_a_batch_whose_outputs_fail_is_reported_and_the_others_are_written(onnx_model, isic_val, tmp_path):
    images = sorted((isic_val / "images").glob("*.jpg"))[:10]
    backend = open_backend(onnx_model)
    stages = _FailingBatch(backend)
    backend.batch_stages = lambda batch_size=8: stages
    summary = predict(images, backend, tmp_path / "out", PredictOptions(batch_size=4, workers=2))
    assert summary.ok == 6 and len(summary.failed) == 4
    assert all("inference failed (RuntimeError: device lost)" in message for _, message in summary.failed)
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == sorted(f"{p.stem}.png" for p in images[:4] + images[8:])
    # Resumable: the failed batch is redone by the next run, the rest skipped.
    backend.batch_stages = lambda batch_size=8: _ProcessStages(backend)
    again = predict(images, backend, tmp_path / "out", PredictOptions(batch_size=4, workers=2))
    assert (again.ok, again.skipped, again.failed) == (4, 6, [])


def test_a_full_disk_stops_worker_processes_with_queued_batches_and_the_resume_completes(onnx_model, isic_val, small_disk, tmp_path):
    """Writes fail in the worker processes while a batch is still queued: the run stops with the disk's error, the
    stages are closed (a GPU would unpin the slots), every mask left is complete, a row says ok only for a mask that
    is there, and the resume finishes with the masks of an undisturbed run."""
    images = sorted((isic_val / "images").glob("*.jpg"))[:24]
    backend = open_backend(onnx_model)
    stages = _QueuedStages(backend)
    backend.batch_stages = lambda batch_size=8: stages
    opts = PredictOptions(batch_size=4, workers=2)
    out = small_disk / "out"
    with pytest.raises(OutputWriteError, match="no space left on the disk"):
        predict(images, backend, out, opts)
    assert stages.closed == 1
    for mask in (out / "masks").glob("*.png"):
        assert cv2.imread(str(mask), cv2.IMREAD_UNCHANGED) is not None, mask.name
    for row in csv.DictReader(open(out / "results.csv")):
        assert row["status"] == "ok" and (out / "masks" / f"{Path(row['path']).stem}.png").is_file()
    remount(small_disk, "size=16m")
    resumed = predict(images, backend, out, opts)
    assert (resumed.ok + resumed.skipped, resumed.failed) == (24, []) and resumed.ok > 0 and stages.closed == 2
    backend.batch_stages = lambda batch_size=8: _ProcessStages(backend)
    assert predict(images, backend, tmp_path / "reference", opts).ok == 24
    for mask in (tmp_path / "reference" / "masks").iterdir():
        assert (out / "masks" / mask.name).read_bytes() == mask.read_bytes(), mask.name


def test_slots_are_sized_for_the_first_images_and_bounded(isic_val, ph2_val_images, tmp_path, monkeypatch):
    """A slot holds what the stages place for the largest of the folder's first images (their headers read); no more
    slots than images, and no more memory than _SLOT_MEMORY (but a batch's worth)."""
    stages = BatchStages(backend=None)
    isic = sorted((isic_val / "images").glob("*.jpg"))[:20]
    pool = predict_module._slot_pool(isic, stages, 256, batch_size=8, chunk=2, keep_pixels=False)
    needed = slot_layout_bytes([(256, 256, 3), (256, 256, 4), (256, 256, 4), (256, 256, 1)])  # pixels, three outputs
    assert pool.slot_bytes == -(-needed // SLOT_ALIGN) * SLOT_ALIGN and pool.nbytes == 22 * pool.slot_bytes
    ph2 = sorted(ph2_val_images.glob("*.jpg"))[:5]
    needed = max(slot_layout_bytes([(h, w, 3), (256, 256, 4), (h, w, 4), (h, w, 1)]) for h, w in (cv2.imread(str(p)).shape[:2] for p in ph2))
    pool = predict_module._slot_pool(isic + ph2, stages, 256, batch_size=8, chunk=2, keep_pixels=False)
    assert pool.slot_bytes == -(-needed // SLOT_ALIGN) * SLOT_ALIGN
    fifo = tmp_path / "fifo.jpg"  # a FIFO among the first images: never read (that would block), not counted
    os.mkfifo(fifo)
    assert predict_module._slot_pool([fifo, *isic, *ph2], stages, 256, batch_size=8, chunk=2, keep_pixels=False).slot_bytes == pool.slot_bytes
    monkeypatch.setattr(predict_module, "_SLOT_MEMORY", 5 * pool.slot_bytes)
    assert predict_module._slot_pool(isic + ph2, stages, 256, batch_size=8, chunk=2, keep_pixels=False).nbytes == (8 + 2) * pool.slot_bytes
