"""Lowerings of the ``ultralbm::SelectiveScan`` node (see ``scan_node``) into the forms the export ships.

- ``loop``: the recurrence as one ONNX ``Scan`` op over time (a three-node body), operands prepared outside it.
- ``linear_attention``: ONNX Runtime's contrib op ``com.microsoft.LinearAttention`` with the gated update rule,
  which is Mamba-1's recurrence with one head per channel: q = C (shared), k = B, v = delta * u,
  log-decay = delta * A (``runtime.onnx_scan.linear_attention_nodes``). ONNX Runtime >= 1.25.1 only.
- ``portable``: the ``loop`` form, plus a record of each scan (its eight inputs, output and d_inner) in the metadata
  entry ``ultralbm.scan_swap``, from which ONNX Runtime's backend swaps the scans to the ``linear_attention`` form at
  load time when the installed onnxruntime has the op (``runtime.backends.ort_scan_swap``). The default.
- ``plugin``: the node stays, and the model carries a local function of the same name whose body is the ``loop``
  form, so ONNX Runtime inlines it with no custom op while a TensorRT plugin / ORT custom op can claim the node
  (drop the function with ``strip_scan_function`` when one is registered: parsers prefer a local function).

All forms only multiply decays exp(delta * A) <= 1, like the traced strategies.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from ultralbm_edge.runtime.backends.ort_scan_swap import swap_record
from ultralbm_edge.runtime.onnx_scan import CONTRIB_DOMAIN, SCAN_INPUTS, GraphBuilder, epilogue, linear_attention_nodes

from .scan_policy import LOWERED_FORMS
from .scan_policy import SCAN_NODE_DOMAIN as DOMAIN
from .scan_policy import SCAN_NODE_OP as OP_TYPE



def _prologue(b: GraphBuilder, delta: str, delta_bias: str) -> str:
    """delta <- softplus(delta + delta_bias), shape [batch, d_inner, L]."""
    return b("Softplus", b("Add", delta, b("Unsqueeze", delta_bias, b.const(-1))))


def _scan_body() -> onnx.GraphProto:
    """h = h_prev * a_t + b_t; the state is also the scan output.

    The state comes first in the Mul on purpose: OpenVINO (2024.6 to 2026.4, CPU, static shapes) computes
    ``Mul(a_t, h_prev)`` as ``a_t * a_t`` from the second step on (any commutative op whose first operand is a scan
    slice and whose second is the state reads the slice twice), silently. ``Mul(h_prev, a_t)`` is exact there."""
    f = TensorProto.FLOAT
    return helper.make_graph(
        [
            helper.make_node("Mul", ["h_prev", "a_t"], ["ah"], name="decay"),
            helper.make_node("Add", ["ah", "b_t"], ["h"], name="update"),
            helper.make_node("Identity", ["h"], ["h_t"], name="emit"),
        ],
        "selective_scan_step",
        [helper.make_tensor_value_info(n, f, None) for n in ("h_prev", "a_t", "b_t")],
        [helper.make_tensor_value_info(n, f, None) for n in ("h", "h_t")],
    )


def _loop_nodes(prefix: str, names: list[str], out: str) -> list[onnx.NodeProto]:
    u, delta, A, B, C, D, z, delta_bias = names
    b = GraphBuilder(prefix)
    dt = _prologue(b, delta, delta_bias)
    last, one = b.const(-1), b.const(1)
    # Operands of h[t] = a[t] * h[t-1] + b[t], [batch, d_inner, L, d_state].
    a = b("Exp", b("Mul", b("Unsqueeze", dt, last), b("Unsqueeze", A, one)))
    b_t = b("Unsqueeze", b("Transpose", B, perm=[0, 2, 1]), one)  # [batch, 1, L, d_state]
    bx = b("Mul", b("Unsqueeze", b("Mul", dt, u), last), b_t)
    # h[-1] = 0 with shape [batch, d_inner, d_state].
    h0_shape = b("Concat", b("Shape", u, end=2), b("Shape", A, start=1), axis=0)
    h0 = b("ConstantOfShape", h0_shape, value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    _, h = b("Scan", h0, a, bx, outputs=2, body=_scan_body(), num_scan_inputs=2, scan_input_axes=[2, 2], scan_output_axes=[2])
    c_t = b("Unsqueeze", b("Transpose", C, perm=[0, 2, 1]), one)
    y = b("ReduceSum", b("Mul", h, c_t), last, keepdims=0)
    epilogue(b, y, u, D, z, out)
    return b.nodes


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of the initializers and of every tensor shape inference can size (once per model)."""
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for info in onnx.shape_inference.infer_shapes(model).graph.value_info:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in info.type.tensor_type.shape.dim]
        if dims and min(dims) > 0:
            shapes.setdefault(info.name, dims)
    return shapes


def _scan_function(opset: int) -> onnx.FunctionProto:
    return helper.make_function(
        DOMAIN, OP_TYPE, list(SCAN_INPUTS), ["y"], _loop_nodes("body", list(SCAN_INPUTS), "y"),
        [helper.make_opsetid("", opset)], attributes=["delta_softplus"],
    )  # fmt: skip


def lower_scan_nodes(model: onnx.ModelProto, form: str) -> onnx.ModelProto:
    """Rewrite every ``ultralbm::SelectiveScan`` node of ``model`` into ``form`` (one of ``LOWERED_FORMS``)."""
    if form not in LOWERED_FORMS:
        raise ValueError(f"unknown scan form {form!r}; choose one of {LOWERED_FORMS}")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    graph = model.graph
    scans = [n for n in graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]
    for node in scans:
        softplus = next((a.i for a in node.attribute if a.name == "delta_softplus"), 1)
        if softplus != 1:
            raise ValueError(f"{node.name}: delta_softplus={softplus} is not supported by the stock lowerings")
    if form == "plugin":
        model.functions.append(_scan_function(opset))
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
        return model
    shapes = _static_shapes(model) if form in ("linear_attention", "portable") else {}
    new_nodes: list[onnx.NodeProto] = []
    recorded: list[dict] = []
    for node in graph.node:
        if node not in scans:
            new_nodes.append(node)
            continue
        prefix, names, out = node.name or node.output[0], list(node.input), node.output[0]
        if form in ("linear_attention", "portable") and names[2] not in shapes:
            raise ValueError(f"SelectiveScan input {names[2]!r} has no static shape; the LinearAttention form needs A's")
        if form == "linear_attention":
            new_nodes += linear_attention_nodes(prefix, names, out, shapes[names[2]][0])
        else:
            new_nodes += _loop_nodes(prefix, names, out)
            recorded.append({"inputs": names, "output": out, "d_inner": shapes.get(names[2], [0])[0]})
    del graph.node[:]
    graph.node.extend(new_nodes)
    for i, o in enumerate(model.opset_import):
        if o.domain == DOMAIN:
            del model.opset_import[i]
            break
    if form == "linear_attention":
        model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    if form == "portable":  # what the ONNX Runtime backend needs to swap the scans to LinearAttention at load time
        props = {p.key: p.value for p in model.metadata_props}
        onnx.helper.set_model_props(model, {**props, **swap_record(recorded)})
    return model


def strip_scan_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the ``plugin`` form's local function, so a registered SelectiveScan plugin / custom op claims the node."""
    keep = [f for f in model.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
    del model.functions[:]
    model.functions.extend(keep)
    return model
