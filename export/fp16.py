"""FP16 graphs with the numerically sensitive parts kept in FP32 (torch-free).

Used for the ``--fp16`` export and for strongly typed TensorRT (TensorRT 11, TensorRT-RTX), where precision comes
from the ONNX types. Kept in FP32: the node scopes the model's metadata names (``fp32_scopes``: the Mamba blocks,
whose softplus(dt), exp(dt*A) and scan products of decays underflow or lose precision in half), the Layer/Group
norms, and the final sigmoid. I/O stays FP32.
"""

from __future__ import annotations

from typing import Sequence

import onnx
import onnxslim
from onnxruntime.transformers.float16 import convert_float_to_float16

# Op types that stay FP32 wherever they occur.
FP32_OPS = ["LayerNormalization", "InstanceNormalization", "GroupNormalization", "Sigmoid", "Softplus", "Exp", "Resize"]


def convert_to_fp16(model: onnx.ModelProto, fp32_scopes: Sequence[str]) -> onnx.ModelProto:
    """``model`` with FP16 internals, except nodes whose name contains one of ``fp32_scopes`` and ``FP32_OPS``."""
    keep = [n.name for n in model.graph.node if any(scope in n.name for scope in fp32_scopes)]
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=FP32_OPS, node_block_list=keep, disable_shape_infer=False
    )
    # The converter appends its I/O casts out of order; onnxslim re-sorts the graph and folds redundant casts.
    return onnxslim.slim(half)
