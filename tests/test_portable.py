"""The default export (``portable``): stock Scan graph on disk, swapped to ONNX Runtime's LinearAttention at load
time only where the installed onnxruntime has it (>= 1.25.1), exact in both forms; a record that does not fit
its graph falls back to the stock graph instead of failing or computing something else."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ultralbm_edge.export import export_onnx
from ultralbm_edge.runtime.backends import onnxruntime_backend
from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ultralbm_edge.runtime.backends.ort_scan_swap import (
    SWAP_KEY,
    SwapError,
    read_swap_record,
    supports_linear_attention,
    swap_scans,
)
from ultralbm_edge.runtime.parity import compare

SWAPS_HERE = supports_linear_attention(ort.__version__)


def test_linear_attention_needs_onnxruntime_1_25_1_not_1_25_0():
    assert not supports_linear_attention("1.25.0") and not supports_linear_attention("1.17.3")
    assert supports_linear_attention("1.25.1") and supports_linear_attention("1.32.0")
    assert supports_linear_attention("1.26.0.dev20250601") and supports_linear_attention("1.25.1+cu12")


def test_the_default_export_is_portable_and_records_its_scans(exported_scans):
    path = exported_scans["portable"].path
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Scan") == 4 and "LinearAttention" not in ops
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)  # stock operators only
    record = read_swap_record(model)
    assert record["form"] == "linear_attention" and record["min_onnxruntime"] == "1.25.1"
    assert len(record["scans"]) == 4 and {len(s["inputs"]) for s in record["scans"]} == {8}
    assert sorted(s["d_inner"] for s in record["scans"]) == [16, 24, 24, 32]  # one Mamba call per GLMBP block


@pytest.mark.skipif(not SWAPS_HERE, reason=f"onnxruntime {ort.__version__} has no LinearAttention (needs >= 1.25.1)")
def test_installed_onnxruntime_runs_the_swapped_form_and_both_forms_are_exact(exported_scans, sample_images, sample_reference):
    result = exported_scans["portable"]
    labels = [r.runtime for r in result.parities]
    assert "swapped to LinearAttention" in labels[0] and "stock Scan graph" in labels[1], labels
    assert all(r.ok for r in result.parities)
    swapped = OnnxRuntimeBackend(result.path)
    stock = OnnxRuntimeBackend(result.path, swap_scan=False)
    assert swapped.scan_form.startswith("linear_attention") and stock.scan_form == "as exported"
    assert swapped.describe()["scan"] == swapped.scan_form
    for backend in (swapped, stock):
        report = compare(backend.run(sample_images), sample_reference)
        assert report.ok, report.summary()


def test_the_swapped_graph_is_the_linear_attention_form(exported_scans):
    model = onnx.load(str(exported_scans["portable"].path))
    swapped = swap_scans(model, read_swap_record(model))
    ops = [n.op_type for n in swapped.graph.node]
    assert ops.count("LinearAttention") == 4 and "Scan" not in ops and "Softplus" not in ops
    assert SWAP_KEY not in {p.key for p in swapped.metadata_props}
    onnx.checker.check_model(swapped, full_check=True)
    linear_attention = onnx.load(str(exported_scans["linear_attention"].path))
    assert sorted(ops) == sorted(n.op_type for n in linear_attention.graph.node)  # the same lowering as --scan linear_attention


@pytest.mark.parametrize("old", ["1.17.3", "1.22.1", "1.25.0"])
def test_an_older_onnxruntime_runs_the_stock_graph(exported_scans, sample_images, sample_reference, monkeypatch, old):
    """Simulated: the backend reads the installed version, so an older one never sees the LinearAttention graph."""
    monkeypatch.setattr(onnxruntime_backend.ort, "__version__", old)
    backend = OnnxRuntimeBackend(exported_scans["portable"].path)
    assert backend.scan_form == "as exported"
    assert compare(backend.run(sample_images[:2]), sample_reference[:2]).ok


def test_export_under_an_older_onnxruntime_checks_the_stock_graph_only(monkeypatch, tmp_path):
    monkeypatch.setattr(ort, "__version__", "1.22.1")
    result = export_onnx("ultralbm", tmp_path / "m.onnx", parity_count=4)
    ort_labels = [r.runtime for r in result.parities if r.runtime.startswith("onnxruntime")]
    assert ort_labels == ["onnxruntime 1.22.1"] and result.parity.ok


def test_a_record_that_does_not_fit_the_graph_falls_back_to_the_stock_graph(exported_scans, sample_images, sample_reference, tmp_path):
    model = onnx.load(str(exported_scans["portable"].path))
    record = read_swap_record(model)
    record["scans"][0]["inputs"][0] = record["scans"][1]["inputs"][0]  # another block's u: the region is not closed
    with pytest.raises(SwapError, match="not closed"):
        swap_scans(onnx.load(str(exported_scans["portable"].path)), record)
    bad = tmp_path / "bad_record.onnx"
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, SWAP_KEY: json.dumps(record)})
    onnx.save(model, str(bad))
    backend = OnnxRuntimeBackend(bad)
    if SWAPS_HERE:
        assert "swap failed" in backend.scan_form and "SwapError" in backend.scan_form
    assert compare(backend.run(sample_images[:2]), sample_reference[:2]).ok


def test_a_swap_that_does_not_apply_refuses_the_export(monkeypatch, tmp_path):
    """The export checks that the swap applied: a record that silently fell back would ship a slower default."""
    if not SWAPS_HERE:
        pytest.skip(f"onnxruntime {ort.__version__} does not swap")
    from ultralbm_edge.export import ExportError

    monkeypatch.setattr(onnxruntime_backend, "swapped_bytes", lambda data, version: (_ for _ in ()).throw(SwapError("broken")))
    with pytest.raises(ExportError, match="not written — an installed runtime cannot run it: .*swap did not apply"):
        export_onnx("ultralbm", tmp_path / "m.onnx", parity_count=2)
    assert not (tmp_path / "m.onnx").exists()


def test_swapped_and_stock_graphs_agree_on_a_dynamic_batch(sample_images):
    """A dynamic-batch default export: both forms take any batch and agree per image."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = export_onnx("ultralbm", Path(d) / "dyn.onnx", dynamic_batch=True, check=False).path
        a = OnnxRuntimeBackend(path).run(sample_images)
        b = OnnxRuntimeBackend(path, swap_scan=False).run(sample_images)
    assert np.abs(a - b).max() < 1e-4
