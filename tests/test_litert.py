"""LiteRT (.tflite) as the mobile runtime: the litert-torch export is exact on the torch-free LiteRT interpreter,
carries its metadata inside the flatbuffer, has an honest fixed batch, and bad requests or foreign files are
refused with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import run_cli
from ultralbm_edge.assets import SAMPLE_IMAGES
from ultralbm_edge.checkpoint import load_checkpoint
from ultralbm_edge.export import ExportError, export_model, reference_probs
from ultralbm_edge.runtime.dataset import load_images
from ultralbm_edge.runtime.model_files import resolve_model
from ultralbm_edge.runtime.parity import compare

pytest.importorskip("ai_edge_litert", reason="needs the LiteRT runtime (pip install '.[litert]')")

from ultralbm_edge.runtime.backends import BackendError, open_backend  # noqa: E402
from ultralbm_edge.runtime.backends.litert_backend import METADATA_NAME, LiteRTBackend  # noqa: E402


@pytest.fixture(scope="module")
def tflite(format_export):
    pytest.importorskip("litert_torch", reason="the LiteRT export needs litert-torch (pip install '.[litert-export]')")
    return format_export("litert")


@pytest.mark.slow
def test_the_export_is_exact_on_litert_and_self_describing(tflite):
    assert [r.runtime for r in tflite.parities] == [f"LiteRT {LiteRTBackend.runtime_version()} CPU"]
    assert tflite.parity.ok and tflite.parity.n_images == 10, tflite.parity.summary()
    backend = open_backend(tflite.path, threads=2)
    assert isinstance(backend, LiteRTBackend) and (backend.max_batch, backend.fixed_batch) == (1, True)
    meta = backend.metadata
    assert (meta.variant, meta.scan_strategy, meta.image_size, meta.precision) == ("ultralbm", "blelloch", 256, "fp32")
    images = load_images(SAMPLE_IMAGES, 3, 256).images  # three images through a batch-1 graph: three calls
    report = compare(backend.run(images), reference_probs(load_checkpoint(resolve_model("ultralbm", "torch")).model.eval(), images))
    assert report.ok, report.summary()


@pytest.mark.slow
def test_predict_runs_a_tflite_model(tflite, ph2_val_images, tmp_path):
    res = run_cli("predict", str(ph2_val_images), "-m", str(tflite.path), "-o", str(tmp_path / "masks"))
    assert res.returncode == 0 and "30 segmented" in res.stdout and "litert" in res.stdout, res.stdout + res.stderr


@pytest.mark.slow
def test_a_tflite_without_our_metadata_is_refused(tflite, tmp_path):
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(tflite.path.read_bytes(), 0)
    model.metadata = [m for m in model.metadata if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes(bytes(builder.Output()))
    with pytest.raises(BackendError, match="foreign.tflite: has no ultralbm-edge metadata"):
        open_backend(foreign)
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(BackendError, match="junk.tflite: not a readable .tflite"):
        open_backend(tmp_path / "junk.tflite")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dynamic_batch": True}, "LiteRT export has a fixed batch: pass --batch N"),
        ({"scan": "portable"}, "--scan portable: LiteRT models are converted from PyTorch with a traced strategy"),
    ],
)
def test_requests_litert_cannot_honour_are_refused(tmp_path, options, message):
    pytest.importorskip("litert_torch", reason="the LiteRT export needs litert-torch (pip install '.[litert-export]')")
    with pytest.raises(ExportError, match=message):
        export_model("ultralbm", tmp_path / "m.tflite", format="litert", **options)
    assert list(tmp_path.iterdir()) == []


def test_the_litert_backend_is_torch_free():
    code = "import sys, ultralbm_edge.runtime.backends.litert_backend; assert 'torch' not in sys.modules, 'torch imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
