"""FP16 graphs with the numerically sensitive parts kept in FP32.

Used for the ``--fp16`` export and for strongly typed TensorRT (TensorRT 11, TensorRT-RTX), where precision comes
from the ONNX types. Kept in FP32: everything inside the Mamba blocks (softplus(dt), exp(dt*A), the scan's products
of decays, which underflow/lose precision in half), the Layer/Group norms, and the final sigmoid. I/O stays FP32.
"""

from __future__ import annotations

import onnx
import onnxslim
from onnxruntime.transformers.float16 import convert_float_to_float16

# Op types that stay FP32 wherever they occur.
FP32_OPS = ["LayerNormalization", "InstanceNormalization", "GroupNormalization", "Sigmoid", "Softplus", "Exp", "Resize"]
# Node-name fragment of the Mamba blocks in a traced export (module scope names).
MAMBA_SCOPE = "/mamba/"


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    keep = [n.name for n in model.graph.node if MAMBA_SCOPE in n.name]
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=FP32_OPS, node_block_list=keep, disable_shape_infer=False
    )
    # The converter appends its I/O casts out of order; onnxslim re-sorts the graph and folds redundant casts.
    return onnxslim.slim(half)
