"""GPU execution for ``.pth`` models: a whole-network CUDA-graph runner over the fused Triton kernels.

``ops.selective_scan(..., strategy="triton")`` (or ``model.set_scan_strategy("triton")``) runs the Mamba
recurrence through :mod:`ultralbm_edge.ops.triton.scan`; with ``model.fused_kernels = True`` the dense 3x3 conv
stages, the decoder's upsampling steps with the 1x1 head and the LMBP/GLMBP conv branches run as fused fp32
inference kernels (``ops.triton``); :class:`CudaGraphRunner` turns both on and replays one captured graph per batch
size. All need a CUDA GPU and the triton package that CUDA builds of PyTorch ship with (or Triton's CPU
interpreter, see :mod:`ultralbm_edge.ops.triton.common`).
"""

from .graph_runner import CudaGraphRunner

__all__ = ["CudaGraphRunner"]
