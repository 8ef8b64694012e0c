"""The selective scan as one ONNX node: ``ultralbm::SelectiveScan``, emitted while tracing.

Schema (domain ``ultralbm``, version 1), the layout of ``mamba_ssm``'s ``selective_scan_fn``::

    SelectiveScan(u, delta, A, B, C, D, z, delta_bias) -> y
      u, delta, z   float32 [batch, d_inner, L]
      A             float32 [d_inner, d_state]     (negative: -exp(A_log))
      B, C          float32 [batch, d_state, L]
      D, delta_bias float32 [d_inner]
      y             float32 [batch, d_inner, L]
      attribute delta_softplus: int, 1 = delta <- softplus(delta + delta_bias) (the only value Mamba uses)

    dA[t] = exp(delta[t] * A);  h[t] = dA[t] * h[t-1] + delta[t] * B[t] * u[t];  h[-1] = 0
    y[t]  = (sum_n C[n, t] * h[t, n] + D * u[t]) * silu(z[t])

A TensorRT plugin or ONNX Runtime custom op registered under this name implements it natively; without one,
``export.scan_lowering`` replaces the node with stock operators (see ``lower_scan_nodes``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ultralbm_edge.ops import register_fused_scan, selective_scan

from .scan_policy import SCAN_NODE_DOMAIN as DOMAIN
from .scan_policy import SCAN_NODE_OP as OP_TYPE
# Registered name of the fused "strategy" that traces to the node (set by export_onnx on every Mamba block).
NODE_STRATEGY = "onnx-node"


class _SelectiveScanNode(torch.autograd.Function):
    """Computes the scan exactly (Blelloch) in PyTorch; exports as one ``ultralbm::SelectiveScan`` node."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool):  # type: ignore[override]
        return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, strategy="blelloch")

    @staticmethod
    def symbolic(g, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool):  # type: ignore[no-untyped-def]
        out = g.op(f"{DOMAIN}::{OP_TYPE}", u, delta, A, B, C, D, z, delta_bias, delta_softplus_i=int(delta_softplus))
        return out.setType(u.type())


@register_fused_scan(NODE_STRATEGY)
def selective_scan_node(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
) -> Tensor:
    if D is None or z is None or delta_bias is None or not delta_softplus:
        raise ValueError("the SelectiveScan node covers Mamba's call only: D, z and delta_bias given, delta_softplus=True")
    return _SelectiveScanNode.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
