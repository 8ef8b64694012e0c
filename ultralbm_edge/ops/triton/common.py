"""What the package's Triton kernels share: exact GELU, and which tensors their wrappers take.

Triton's CPU interpreter (``TRITON_INTERPRET=1``) runs the kernels on CPU tensors, slowly: how they are checked on
a machine without a GPU. The kernels' wrappers accept CPU tensors only then.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_fp32_input(x: Tensor, op: str) -> None:
    """The fused inference kernels take CUDA float32 tensors (CPU ones under the interpreter)."""
    if (x.device.type != "cuda" and not interpreting()) or x.dtype != torch.float32:
        raise ValueError(f"{op} takes CUDA float32 tensors, got {x.dtype} on {x.device}")


@triton.jit
def gelu(v):
    """Exact (erf) GELU, as ``torch.nn.functional.gelu`` by default."""
    return 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
