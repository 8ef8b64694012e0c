"""Export: every scan strategy is exact on real images, self-describing, small; the SelectiveScan node and its
lowerings (Scan loop, ONNX Runtime LinearAttention, plugin + local function) are exact where the recurrence
dominates; bad requests fail with one clear error and write nothing."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import run_cli
from ultralbm_edge.export import (
    AUTO_SCAN,
    LOWERED_FORMS,
    ExportError,
    export_onnx,
    export_scans,
    lower_scan_nodes,
    resolve_scan,
    strip_scan_function,
)
from ultralbm_edge.export.scan_node import DOMAIN, NODE_STRATEGY, OP_TYPE
from ultralbm_edge.models.mamba import Mamba
from ultralbm_edge.ops import register_scan, scan_strategies
from ultralbm_edge.runtime.metadata import read_onnx_metadata
from ultralbm_edge.runtime.model_files import resolve_model
from ultralbm_edge.runtime.parity import EXACT


@pytest.mark.parametrize("scan", export_scans())
def test_every_strategy_is_exact_small_and_self_describing(exported_scans, scan):
    result = exported_scans[scan]
    report = result.parity
    assert report.ok and report.n_images == 10 and report.tolerances == EXACT, report.summary()
    assert result.path.stat().st_size <= 1_000_000
    meta = read_onnx_metadata(result.path)
    assert (meta.scan_strategy, meta.variant, meta.image_size, meta.precision) == (scan, "ultralbm", 256, "fp32")
    assert meta.fp32_scopes == ["/mamba/"] and meta.unquantized_scopes == ["/encoder1/", "/final/"]  # from the registry
    assert meta.source_checkpoint_sha256 == hashlib.sha256(resolve_model("ultralbm", "torch").read_bytes()).hexdigest()
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert "CumSum" not in ops and "Loop" not in ops
    assert ("Scan" in ops) == (scan in ("loop", "portable"))
    assert ("LinearAttention" in ops) == (scan == "linear_attention")
    assert (OP_TYPE in ops) == (scan == "plugin")
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["prob"]


def _mamba_onnx(tmp_path, form: str, length: int = 64) -> tuple[onnx.ModelProto, Mamba, torch.Tensor]:
    """One randomly initialised Mamba block (decays exp(-dt * n) near 1: the recurrence carries far) as ONNX."""
    torch.manual_seed(0)
    block = Mamba(d_model=8).eval()
    block.scan_strategy = NODE_STRATEGY
    x = torch.randn(4, length, 8)
    path = tmp_path / "mamba.onnx"
    torch.onnx.export(block, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                      custom_opsets={DOMAIN: 1}, dynamo=False)  # fmt: skip
    return lower_scan_nodes(onnx.load(str(path)), form), block, x


@pytest.mark.parametrize("form", LOWERED_FORMS)
def test_lowered_scan_forms_equal_the_sequential_reference(tmp_path, form):
    model, block, x = _mamba_onnx(tmp_path, form)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        block.scan_strategy = "sequential"
        want = block(x).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # The check can fail: without the recurrence (h = b) the output is far outside that tolerance.
    with memoryless_scan(), torch.no_grad():
        block.scan_strategy = "memoryless"
        assert np.abs(block(x).numpy() - want).max() > 100 * np.abs(got - want).max()


@contextmanager
def memoryless_scan():
    """A temporary scan strategy "memoryless" that drops the recurrence (h = b): what a broken scan looks like."""
    from ultralbm_edge.ops import scan as scan_ops

    register_scan("memoryless")(lambda a, b: b)
    try:
        yield
    finally:
        del scan_ops._SOLVERS["memoryless"]


def test_a_newly_registered_solver_is_exportable():
    """The export's forms come from the scan registry: registering a solver makes it an export form at once."""
    with memoryless_scan():
        assert "memoryless" in scan_strategies() and "memoryless" in export_scans()
        assert resolve_scan("memoryless") == "memoryless"
    assert "memoryless" not in export_scans()


def test_parity_gate_refuses_a_graph_without_the_recurrence(exported_scans, tmp_path):
    """The whole-model gate can fail: the bundled model exported with h = b instead of the scan is refused."""
    from ultralbm_edge.assets import SAMPLE_IMAGES
    from ultralbm_edge.checkpoint import load_checkpoint
    from ultralbm_edge.export import check_parity
    from ultralbm_edge.runtime.dataset import load_images

    model = load_checkpoint(resolve_model("ultralbm", "torch")).model.eval()
    with memoryless_scan():
        model.set_scan_strategy("memoryless")
        torch.onnx.export(model, (torch.zeros(1, 3, 256, 256),), str(tmp_path / "m.onnx"), input_names=["image"],
                          output_names=["prob"], opset_version=17, dynamo=False)  # fmt: skip
    graph = onnx.load(str(tmp_path / "m.onnx"))
    onnx.helper.set_model_props(graph, read_onnx_metadata(exported_scans["blelloch"].path).to_props())
    onnx.save(graph, str(tmp_path / "m.onnx"))
    images = load_images(SAMPLE_IMAGES, 10, 256).images
    report = check_parity(tmp_path / "m.onnx", model, images)
    assert not report.ok and report.max_abs_diff > 5e-3, report.summary()


def test_plugin_form_is_one_node_with_a_local_function_and_stripping_leaves_the_node(tmp_path):
    model, _, x = _mamba_onnx(tmp_path, "plugin")
    nodes = [n for n in model.graph.node if n.op_type == OP_TYPE]
    assert len(nodes) == 1 and nodes[0].domain == DOMAIN and len(nodes[0].input) == 8
    assert [(f.domain, f.name) for f in model.functions] == [(DOMAIN, OP_TYPE)]
    stripped = strip_scan_function(model)
    assert not stripped.functions and any(n.op_type == OP_TYPE for n in stripped.graph.node)
    with pytest.raises(Exception, match=OP_TYPE):  # no custom op registered: ORT names the missing kernel
        ort.InferenceSession(stripped.SerializeToString(), providers=["CPUExecutionProvider"])


def test_auto_picks_per_target_and_refuses_forms_a_target_cannot_load():
    assert resolve_scan("auto", "onnxruntime") == AUTO_SCAN["onnxruntime"] == "portable"
    assert resolve_scan("auto", "tensorrt") == AUTO_SCAN["tensorrt"] == "blelloch"
    assert resolve_scan("auto", "openvino") == AUTO_SCAN["openvino"] == "loop"
    assert resolve_scan("portable", "tensorrt") == "portable"  # stock Scan ops: TensorRT builds it (test_engine)
    with pytest.raises(ExportError, match="TensorRT cannot build"):
        resolve_scan("linear_attention", "tensorrt")
    for form in ("linear_attention", "plugin"):
        with pytest.raises(ExportError, match=f"--scan {form} uses .*OpenVINO cannot read.*--target openvino"):
            resolve_scan(form, "openvino")
    with pytest.raises(ExportError, match="unknown scan strategy 'cumsum'"):
        resolve_scan("cumsum")
    # FP16: the same stock Scan graph without the swap record, whose region the FP16 casts would break.
    assert resolve_scan("auto", "onnxruntime", fp16=True) == "loop"
    assert resolve_scan("auto", "tensorrt", fp16=True) == "blelloch"
    with pytest.raises(ExportError, match="--scan portable with --fp16"):
        resolve_scan("portable", fp16=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-size", "100"], "--image-size 100 is not a multiple of 32"),
        (["--opset", "13"], "--opset 13 is unsupported: use 17..20"),
        (["--scan", "cumsum"], "unknown scan strategy 'cumsum'"),
        (["--scan", "linear_attention", "--target", "tensorrt"], "TensorRT cannot build"),
        (["--scan", "plugin", "--target", "openvino"], "OpenVINO cannot read"),
        (["--format", "litert", "--fp16"], "--fp16, --engine and --target apply to ONNX exports"),
        (["--format", "pickle"], "unknown backend 'pickle'"),
    ],
)
def test_bad_export_requests_fail_with_one_line_and_write_nothing(tmp_path, args, message):
    res = run_cli("export", "-m", "ultralbm", "-o", str(tmp_path / "m.onnx"), *args)
    assert res.returncode == 2 and message in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_foreign_checkpoint_and_missing_output_dir(tmp_path):
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, foreign)
    res = run_cli("export", "-m", str(foreign), "-o", str(tmp_path / "m.onnx"))
    assert res.returncode == 2 and "resnet.pth" in res.stderr and not (tmp_path / "m.onnx").exists()
    with pytest.raises(ExportError, match="output directory .*missing does not exist"):
        export_onnx(foreign, tmp_path / "missing" / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet.pth"]
