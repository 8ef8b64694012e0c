"""The pieces of benchmarks/default_speed.py that its printed bound and compute-bound lines rest on (the script itself
builds an earlier commit's package and runs for minutes: not part of the suite)."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
from conftest import REPO
from onnx import TensorProto, helper

sys.path.insert(0, str(REPO / "benchmarks"))
from default_speed import scan_removed, work_per_image  # noqa: E402

from ultralbm_edge.runtime.backends.ort_scan_swap import swapped_bytes  # noqa: E402


def test_work_per_image_counts_convolutions_and_matmuls(tmp_path):
    """2 FLOP per multiply-add: a 3x3 conv 3->4 on 8x8 (pad 1) and a [2, 5] x [5, 7] MatMul, batch 2, per image."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2, 5])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "m")]
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [5, 7], np.zeros(35, np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("MatMul", ["a", "b"], ["m"])]
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "tiny", [x, a], outs, [w, b]), opset_imports=[helper.make_opsetid("", 17)]), path)
    assert work_per_image(path, batch=2) == {"conv": 2 * 4 * 8 * 8 * 27, "matmul": 2 * 2 * 7 * 5, "scan": 0.0}


def test_scan_removed_takes_every_scan_region_out_and_still_runs(exported_scans, sample_images):
    """The bound candidate: no Scan, no softplus of the scans' regions left, four y = u in their place; it loads and
    runs, and its output moves (the scan matters in the bundled model, so the bound is not the network)."""
    portable = exported_scans["portable"].path.read_bytes()
    swapped = swapped_bytes(portable, ort.__version__)
    assert swapped is not None
    bound = onnx.load_from_string(scan_removed(portable))
    ops = [n.op_type for n in bound.graph.node]
    assert "Scan" not in ops and "Softplus" not in ops and "LinearAttention" not in ops
    assert sum(n.name.endswith("/scan_removed") for n in bound.graph.node) == 4
    assert len(ops) < len(onnx.load_from_string(portable).graph.node) - 4 * 10
    bound = bound.SerializeToString()
    feed = {"image": sample_images[:1]}
    full = ort.InferenceSession(swapped, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    cut = ort.InferenceSession(bound, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert cut.shape == full.shape and np.abs(cut - full).max() > 1e-2


def test_work_per_image_of_the_default_export(exported_scans):
    """The bundled model's stock graph: the convolutions dominate, the scans are a few MFLOP (issue 17's figures)."""
    work = work_per_image(exported_scans["portable"].path, batch=1)
    assert 100e6 < work["conv"] < 140e6 and 0 < work["scan"] < 5e6 and work["matmul"] > 0
