"""The bundled models ship in two forms: the checkpoint (training, the CUDA path) and a portable ONNX export of it
(the default everywhere else, torch-free). The ONNX file must be the export of the checkpoint beside it, and a
bundled name must pick the fast form."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from ultralbm_edge.runtime import model_files
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.files import file_sha256
from ultralbm_edge.runtime.metadata import read_onnx_metadata
from ultralbm_edge.runtime.parity import EXACT, compare

NAMES = ("ultralbm", "ultralbm-t", "ultralight-vm-unet")


@pytest.mark.parametrize("name", NAMES)
def test_bundled_onnx_is_the_export_of_the_bundled_checkpoint(name):
    forms = model_files.bundled_models()[name]
    meta = read_onnx_metadata(forms[".onnx"])
    # A retrained checkpoint without a re-export would leave a stale ONNX file as the default model.
    assert meta.source_checkpoint_sha256 == file_sha256(forms[".pth"]), f"re-export {name}: ultralbm-edge export -m {forms['.pth']}"
    assert meta.scan_strategy == "portable", meta.scan_strategy  # runs on every runtime (the portability contract)
    batch_dim = ort.InferenceSession(str(forms[".onnx"]), providers=["CPUExecutionProvider"]).get_inputs()[0].shape[0]
    assert isinstance(batch_dim, str), batch_dim  # dynamic: predict's batches of 8 run unpadded


@pytest.mark.parametrize("name", NAMES)
def test_bundled_onnx_matches_its_checkpoint_on_real_images(name, sample_images):
    """Inside the parity contract on the bundled sample images, ONNX Runtime vs PyTorch."""
    onnx_probs = open_backend(name, backend="onnxruntime").run(sample_images)
    torch_probs = open_backend(name, backend="torch").run(sample_images)
    report = compare(onnx_probs, torch_probs, tolerances=EXACT)
    assert report.ok, report.summary()
    assert not np.array_equal(onnx_probs, np.zeros_like(onnx_probs))


def test_a_bundled_name_picks_onnx_unless_pytorch_has_a_gpu(monkeypatch):
    monkeypatch.setattr(model_files, "_gpu_torch_available", lambda: False)
    assert model_files.resolve_model("ultralbm").suffix == ".onnx"
    assert model_files.resolve_model("ultralbm", "torch").suffix == ".pth"
    monkeypatch.setattr(model_files, "_gpu_torch_available", lambda: True)
    assert model_files.resolve_model("ultralbm").suffix == ".pth"
    assert model_files.resolve_model("ultralbm", "onnxruntime").suffix == ".onnx"
