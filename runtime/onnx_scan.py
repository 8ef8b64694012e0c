"""ONNX node builders for the selective scan (torch-free; needs only the ``onnx`` package and numpy).

Shared by the export's lowerings (``export.scan_lowering``) and the ONNX Runtime backend's load-time scan swap
(``runtime.backends.ort_scan_swap``), so the LinearAttention form a portable export swaps in at load time is the
same graph ``--scan linear_attention`` writes. The scan's eight inputs are the ``ultralbm::SelectiveScan`` node's
(``export/scan_node.py``): ``u, delta, A, B, C, D, z, delta_bias``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONTRIB_DOMAIN = "com.microsoft"
SCAN_INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


class GraphBuilder:
    """Appends nodes with unique, readable names (``prefix/op_k``) and returns their output names."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self._count = prefix, [], 0
        self._consts: dict[tuple[int, ...], str] = {}

    def __call__(self, op: str, *inputs: str, outputs: int = 1, domain: str = "", **attrs) -> str | list[str]:
        self._count += 1
        name = f"{self.prefix}/{op}_{self._count}"
        outs = [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, *values: int) -> str:
        """An int64 vector constant (axes, shapes, repeats), made once per builder."""
        if values not in self._consts:
            name = f"{self.prefix}/const_{len(self._consts)}"
            tensor = helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))
            self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
            self._consts[values] = name
        return self._consts[values]

    def array(self, name: str, value: np.ndarray) -> str:
        """A float32 tensor constant."""
        return self("Constant", value=numpy_helper.from_array(np.asarray(value, dtype=np.float32), f"{self.prefix}/{name}"))


def epilogue(b: GraphBuilder, y: str, u: str, D: str, z: str, out: str) -> None:
    """out = (y + D * u) * silu(z)."""
    y = b("Add", y, b("Mul", u, b("Unsqueeze", D, b.const(-1))))
    b.nodes.append(helper.make_node("Mul", [y, b("Mul", z, b("Sigmoid", z))], [out], name=f"{b.prefix}/out"))


def _softplus(b: GraphBuilder, x: str) -> str:
    """softplus(x) = relu(x) + log(1 + exp(-|x|)): never overflows, and runs as vectorised elementwise kernels
    (ONNX Runtime's Softplus kernel is scalar)."""
    return b("Add", b("Relu", x), b("Log", b("Add", b("Exp", b("Neg", b("Abs", x))), b.array("one", [1.0]))))


def linear_attention_nodes(prefix: str, names: list[str], out: str, d_inner: int) -> list[onnx.NodeProto]:
    """The scan as ONNX Runtime's ``com.microsoft.LinearAttention`` (onnxruntime >= 1.25.1) with the gated update
    rule, which is Mamba-1's recurrence with one head per channel: q = C (one query head shared by all channels),
    k = B (one key head, shared too), v = delta * u (d_v = 1 per channel), log-decay = delta * A.

    LinearAttention takes packed [batch, L, heads * dim] tensors. The log-decay [batch, L, d_inner * d_state] is one
    MatMul of delta^T with a block-diagonal A (built in the graph from A, folded by ONNX Runtime at load), cheaper
    than a broadcast Mul over 16-wide spans; softplus(delta + delta_bias) is written out (see ``_softplus``)."""
    u, delta, A, B, C, D, z, delta_bias = names
    b = GraphBuilder(prefix)
    dt = _softplus(b, b("Add", delta, b("Unsqueeze", delta_bias, b.const(-1))))
    q = b("Transpose", C, perm=[0, 2, 1])
    k = b("Transpose", B, perm=[0, 2, 1])
    v = b("Transpose", b("Mul", dt, u), perm=[0, 2, 1])
    # A_blocks[d, e * d_state + n] = (d == e) * A[e, n]
    eye = b.array("eye", np.eye(d_inner, dtype=np.float32)[:, :, None])
    a_blocks = b("Reshape", b("Mul", eye, b("Unsqueeze", A, b.const(0))), b.const(d_inner, -1))
    g = b("MatMul", b("Transpose", dt, perm=[0, 2, 1]), a_blocks)
    y, _ = b("LinearAttention", q, k, v, "", g, outputs=2, domain=CONTRIB_DOMAIN,
             q_num_heads=1, kv_num_heads=d_inner, update_rule="gated", scale=1.0)  # fmt: skip
    epilogue(b, b("Transpose", y, perm=[0, 2, 1]), u, D, z, out)
    return b.nodes
