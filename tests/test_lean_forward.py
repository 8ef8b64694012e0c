"""The lean export graph (export.lean_forward): the same function as UltraLBM-UNet's own forward, rewrite by
rewrite, for the shipped models and where a rewrite would not be exact; used by the ONNX export where it should be,
with the node scopes quantization and fp16 rely on."""

from __future__ import annotations

import onnx
import pytest
import torch

from ultralbm_edge.checkpoint import load_checkpoint
from ultralbm_edge.export.lean_forward import LeanOptions, LeanUltraLBM
from ultralbm_edge.export.onnx_export import export_forward
from ultralbm_edge.models import create_model
from ultralbm_edge.runtime.model_files import resolve_model

OPTIONS = [LeanOptions(), LeanOptions(blocks=False), LeanOptions(pool_affine=False), LeanOptions(head=False)]


def _max_diff(model, lean, images) -> float:
    with torch.no_grad(), model.using_scan("sequential"):
        return float((lean(images) - model(images)).abs().max())


@pytest.mark.parametrize("name", ["ultralbm", "ultralbm-t"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(k for k, v in vars(o).items() if v) or "none")
def test_lean_graph_computes_the_models_function(name, opts, sample_images):
    model = load_checkpoint(resolve_model(name, "torch")).model.eval()
    images = torch.from_numpy(sample_images)
    assert _max_diff(model, LeanUltraLBM(model, opts).eval(), images) < 2e-5


def test_a_negative_gamma_keeps_the_reference_order_where_pooling_would_not_commute(sample_images):
    """max(g * y) != g * max(y) for g < 0: such a GroupNorm pools first, as the reference does."""
    model = load_checkpoint(resolve_model("ultralbm", "torch")).model.eval()
    with torch.no_grad():
        model.ebn2.weight[1] = -0.7
    lean = LeanUltraLBM(model).eval()
    assert [p.applies for p in lean.pools] == [True, False, True, True, True]
    images = torch.from_numpy(sample_images[:2])
    assert _max_diff(model, lean, images) < 2e-5
    lean.pools[1].applies = True  # the rewrite where it does not hold: the check above would catch it
    assert _max_diff(model, lean, images) > 1e-3


def test_export_traces_the_lean_graph_except_for_tensorrt_and_other_networks():
    ultralbm = create_model("ultralbm").eval()
    assert isinstance(export_forward(ultralbm, "onnxruntime"), LeanUltraLBM)
    assert isinstance(export_forward(ultralbm, "openvino"), LeanUltraLBM)
    assert export_forward(ultralbm, "tensorrt") is ultralbm
    peer = create_model("ultralight-vm-unet").eval()
    assert export_forward(peer, "onnxruntime") is peer


def test_exported_lean_graph_keeps_the_scopes_quantization_and_fp16_name(onnx_model):
    graph = onnx.load(str(onnx_model)).graph
    names = [n.name for n in graph.node]
    for scope in ("/encoder1/", "/final/", "/mamba/"):  # ModelSpec.unquantized_scopes and fp32_scopes
        assert any(scope in name for name in names), scope
    assert "lean export graph" in onnx.load(str(onnx_model)).doc_string
