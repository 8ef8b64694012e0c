"""GPU execution for ``.pth`` models: the fused Triton selective scan and a whole-network CUDA-graph runner.

``ops.selective_scan(..., strategy="triton")`` (or ``model.set_scan_strategy("triton")``) runs the Mamba
recurrence through :mod:`ultralbm_edge.gpu.triton_scan`; :class:`CudaGraphRunner` replays one captured graph
per batch size. Both need a CUDA GPU and the triton package that CUDA builds of PyTorch ship with.
"""

from .graph_runner import CudaGraphRunner

__all__ = ["CudaGraphRunner"]
