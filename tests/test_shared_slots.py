"""Images handed between worker processes and the parent through shared memory (runtime.shared_slots), as the GPU
stages do: the same outputs as the thread pool's, whatever fits a slot or not, with bad images and slots reused."""

import csv

import numpy as np
import pytest
from ultralbm_edge.runtime import predict as predict_module
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.predict import BatchStages, Inferred, PredictOptions, predict
from ultralbm_edge.runtime.preprocess import preprocess
from ultralbm_edge.runtime.shared_slots import SharedArray, SlotPool

TIMING = {"decode_ms", "infer_ms", "post_ms"}


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


def _rows(out):
    return {r["path"]: {k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(open(out / "results.csv"))}


@pytest.mark.parametrize("overlay", [False, True])
def test_worker_processes_through_shared_memory_write_what_threads_write(onnx_model, isic_val, ph2_val_images, tmp_path, monkeypatch, overlay):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((isic_val / "images").glob("*.jpg"))[:14] + sorted(ph2_val_images.glob("*.jpg"))[:3]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "truncated.jpg").write_bytes((isic_val / "images" / "ISIC_0000006.jpg").read_bytes()[:3000])
    # A 256-px image's pixels, map and mask fit a slot of 600 KB; a PH2 image's pixels (1.3 MB) do not and travel
    # pickled. Batch 4: 21 slots for 18 images in flight at most, so slots are waited for and reused.
    monkeypatch.setattr(predict_module, "_SLOT_BYTES", 600_000)
    backend = open_backend(onnx_model)
    opts = PredictOptions(batch_size=4, workers=2, save_probs=True, overlay=overlay)
    threads = predict([images], backend, tmp_path / "threads", opts)
    backend.batch_stages = lambda batch_size=8: _ProcessStages(backend)
    shared_in, shared_out = [], []  # what crossed in shared memory (counted in this, the parent, process)
    infer_batch, place = predict_module._infer_batch, SlotPool.place
    monkeypatch.setattr(predict_module, "_infer_batch", lambda batch, *a: shared_in.extend(isinstance(i.rgb, SharedArray) for i in batch) or infer_batch(batch, *a))
    monkeypatch.setattr(SlotPool, "place", lambda self, *a, **k: (r := place(self, *a, **k), shared_out.extend(r))[0])
    processes = predict([images], backend, tmp_path / "processes", opts)
    monkeypatch.undo()
    assert sum(shared_in) == 14  # the 256-px images' pixels; the PH2 images' were pickled
    assert sum(isinstance(x, SharedArray) for x in shared_out) == 17  # every map (these stages make no mask)
    assert (threads.ok, len(threads.failed)) == (processes.ok, len(processes.failed)) == (17, 1)
    assert _rows(tmp_path / "threads") == _rows(tmp_path / "processes")
    for sub in ["masks", "probs"] + (["overlays"] if overlay else []):
        names = sorted(p.name for p in (tmp_path / "threads" / sub).iterdir())
        assert len(names) == 17 and names == sorted(p.name for p in (tmp_path / "processes" / sub).iterdir())
        for name in names:
            assert (tmp_path / "threads" / sub / name).read_bytes() == (tmp_path / "processes" / sub / name).read_bytes(), f"{sub}/{name}"
