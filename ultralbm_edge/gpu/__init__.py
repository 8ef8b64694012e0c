"""GPU execution for ``.pth`` models: fused Triton kernels and a whole-network CUDA-graph runner.

``ops.selective_scan(..., strategy="triton")`` (or ``model.set_scan_strategy("triton")``) runs the Mamba
recurrence through :mod:`ultralbm_edge.gpu.triton_scan`; with ``model.fused_kernels = True`` the dense 3x3 conv
stages (:mod:`.triton_conv`), the decoder's upsampling steps with the 1x1 head (:mod:`.triton_upsample`) and the
LMBP/GLMBP conv branches (:mod:`.triton_sepconv`) run as fused fp32 inference kernels; :class:`CudaGraphRunner`
turns both on and replays one captured graph per batch size. All need a CUDA GPU and the triton package that CUDA
builds of PyTorch ship with (or Triton's CPU interpreter, see :mod:`.triton_common`).
"""

from .graph_runner import CudaGraphRunner

__all__ = ["CudaGraphRunner"]
