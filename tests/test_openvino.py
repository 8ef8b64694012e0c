"""OpenVINO as a runtime: the Scan body the export writes is exact on OpenVINO (the other operand order is silently
wrong there), the backend runs exported ONNX and IR exactly in f32, files OpenVINO would get wrong or cannot read are
refused with the reason, and the export's parity gate runs on OpenVINO and refuses what fails there."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import run_cli
from ultralbm_edge.export import ExportError, export_onnx
from ultralbm_edge.export import scan_lowering
from ultralbm_edge.runtime.parity import compare

ov = pytest.importorskip("openvino", reason="needs OpenVINO (pip install '.[openvino]')")

from ultralbm_edge.runtime.backends import BackendError, open_backend  # noqa: E402
from ultralbm_edge.runtime.backends import openvino_backend  # noqa: E402
from ultralbm_edge.runtime.backends.openvino_backend import OpenVinoBackend, scan_bodies_openvino_gets_wrong  # noqa: E402


_SCAN_BODY = scan_lowering._scan_body


def _old_scan_body() -> onnx.GraphProto:
    """The body exports before this fix wrote: Mul(a_t, h_prev), the slice first."""
    body = _SCAN_BODY()
    decay = next(n for n in body.node if n.name == "decay")
    decay.input[:] = ["a_t", "h_prev"]
    return body


def _tiny_scan(body: onnx.GraphProto) -> onnx.ModelProto:
    """h[t] = a[t] * h[t-1] + b[t] over axis 1 of [1, 3] inputs, h[-1] = 3: static shapes, as a fixed-batch export."""
    f = TensorProto.FLOAT
    node = helper.make_node("Scan", ["h0", "a", "b"], ["h_last", "h_all"], body=body, num_scan_inputs=2,
                            scan_input_axes=[1, 1], scan_output_axes=[1])  # fmt: skip
    graph = helper.make_graph(
        [node], "tiny_scan",
        [helper.make_tensor_value_info("h0", f, [1]), helper.make_tensor_value_info("a", f, [1, 3]), helper.make_tensor_value_info("b", f, [1, 3])],
        [helper.make_tensor_value_info("h_last", f, [1]), helper.make_tensor_value_info("h_all", f, [1, 3])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run_openvino(model: onnx.ModelProto, feeds: dict, tmp_path) -> np.ndarray:
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    compiled = ov.Core().compile_model(str(tmp_path / "tiny.onnx"), "CPU", openvino_backend.CONFIG)
    return compiled(feeds)[compiled.output(1)]


def test_the_exported_scan_body_is_exact_on_openvino_with_static_shapes(tmp_path):
    feeds = {"h0": np.array([3.0], np.float32), "a": np.array([[0.5, 0.25, 2.0]], np.float32), "b": np.array([[1.0, 10.0, 100.0]], np.float32)}
    want = np.array([[2.5, 10.625, 121.25]], np.float32)  # 0.5*3+1, 0.25*2.5+10, 2*10.625+100
    np.testing.assert_allclose(_run_openvino(_tiny_scan(scan_lowering._scan_body()), feeds, tmp_path), want, rtol=1e-6)
    assert not scan_bodies_openvino_gets_wrong(_tiny_scan(scan_lowering._scan_body()))
    # Why the order matters: the slice-first body reads the slice as the state from step 2 on (a*a + b), silently.
    old = _tiny_scan(_old_scan_body())
    assert scan_bodies_openvino_gets_wrong(old) == ["h_last"]
    got = _run_openvino(old, feeds, tmp_path)
    assert not np.allclose(got, want), "OpenVINO computes Mul(slice, state) right now: the workaround may be retired"
    np.testing.assert_allclose(got, [[2.5, 10.0625, 104.0]], rtol=1e-6)


@pytest.mark.parametrize("scan", ["portable", "loop", "blelloch"])
def test_openvino_backend_runs_exported_onnx_exactly_in_f32(exported_scans, sample_images, sample_reference, scan):
    result = exported_scans[scan]
    assert any(r.runtime.startswith("openvino") and r.ok for r in result.parities)  # the export's own gate ran here
    backend = open_backend(result.path, backend="openvino", threads=2)
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32  # not the bf16 default
    assert backend.max_batch == 1 and backend.fixed_batch
    report = compare(backend.run(sample_images), sample_reference)  # 6 images through a batch-1 graph: padded and sliced
    assert report.ok, report.summary()


@pytest.mark.parametrize("scan, what", [("linear_attention", "LinearAttention"), ("plugin", "SelectiveScan")])
def test_forms_openvino_cannot_read_are_refused_with_the_fix(exported_scans, scan, what):
    with pytest.raises(BackendError, match=f"OpenVINO cannot read .*{what}.*export the default form"):
        open_backend(exported_scans[scan].path, backend="openvino")
    assert not any(r.runtime.startswith("openvino") for r in exported_scans[scan].parities)  # not checked: cannot run


def test_an_old_export_openvino_would_get_wrong_is_refused(exported_scans, tmp_path):
    model = onnx.load(str(exported_scans["loop"].path))
    for node in model.graph.node:
        if node.op_type == "Scan":
            body = next(a.g for a in node.attribute if a.name == "body")
            next(n for n in body.node if n.name == "decay").input[:] = ["a_t", "h_prev"]
    old = tmp_path / "old_loop.onnx"
    onnx.save(model, str(old))
    with pytest.raises(BackendError, match="old_loop.onnx: its Scan body .* OpenVINO computes wrongly \\(4 Scan node"):
        open_backend(old, backend="openvino")
    open_backend(old)  # ONNX Runtime runs it (exactly: the order does not matter there)


def test_export_refuses_a_form_openvino_gets_wrong(monkeypatch, tmp_path):
    """A form/runtime pair known to be wrong is never written: with the old body the backend refuses the file, and
    without that check the parity gate on OpenVINO catches the wrong probabilities."""
    monkeypatch.setattr(scan_lowering, "_scan_body", _old_scan_body)
    with pytest.raises(ExportError, match="m.onnx: not written — an installed runtime cannot run it: .*OpenVINO computes wrongly"):
        export_onnx("ultralbm", tmp_path / "m.onnx", scan="loop", parity_count=4)
    monkeypatch.setattr(openvino_backend, "_refuse_known_wrong_onnx", lambda path: None)
    with pytest.raises(ExportError, match=r"m.onnx: not written — the exported graph is not exact on openvino .* FAIL"):
        export_onnx("ultralbm", tmp_path / "m.onnx", scan="loop", parity_count=4)
    assert list(tmp_path.iterdir()) == []


def test_ir_export_predict_and_benchmark_from_the_cli(tmp_path, ph2_val_images):
    res = run_cli("export", "-m", "ultralbm", "-o", str(tmp_path / "m.xml"), "--dynamic-batch")
    assert res.returncode == 0, res.stderr
    assert "scan=loop" in res.stdout and "openvino" in res.stdout and "PASS" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    backend = open_backend(tmp_path / "m.xml")
    assert isinstance(backend, OpenVinoBackend) and backend.max_batch is None and backend.metadata.scan_strategy == "loop"
    res = run_cli("predict", str(ph2_val_images), "-m", str(tmp_path / "m.xml"), "-o", str(tmp_path / "masks"))
    assert res.returncode == 0 and "30 segmented" in res.stdout and "openvino" in res.stdout, res.stdout + res.stderr
    onnx_path = tmp_path / "m.onnx"
    assert run_cli("export", "-m", "ultralbm", "-o", str(onnx_path), "--dynamic-batch").returncode == 0
    res = run_cli("benchmark", "-m", str(onnx_path), "--backend", "onnxruntime,openvino", "--batch-sizes", "1", "--runs", "2",
                  "--warmup", "1", "--json", str(tmp_path / "bench.json"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())["models"]
    assert [r["backend"]["backend"] for r in rows] == ["onnxruntime", "openvino"]
    assert rows[0]["backend"]["scan"].startswith("linear_attention") and rows[1]["backend"]["openvino"] == openvino_backend.VERSION


def test_ir_export_never_writes_its_weights_over_the_checkpoint(tmp_path):
    """OpenVINO writes NAME.bin beside NAME.xml: a checkpoint called NAME.bin is an input, even with --overwrite."""
    from ultralbm_edge.export.openvino import export as export_openvino
    from ultralbm_edge.runtime.model_files import resolve_model

    ckpt = tmp_path / "model.bin"
    ckpt.write_bytes(resolve_model("ultralbm", "torch").read_bytes())
    before = ckpt.read_bytes()
    with pytest.raises(ExportError, match="is also an input"):
        export_openvino(ckpt, tmp_path / "model.xml", check=False, overwrite=True)
    assert ckpt.read_bytes() == before and not (tmp_path / "model.xml").exists()
