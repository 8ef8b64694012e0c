"""Whole-network CUDA-graph execution for ``.pth`` models: one graph per batch size, pinned-memory copies.

The network is tiny (34k parameters) and runs a few hundred small kernels, so in eager PyTorch the GPU waits
on Python and kernel launches (the authors' code takes ~20 ms whatever the batch). Capturing the forward pass
once per batch size and replaying it removes that overhead; the Mamba blocks use the fused Triton scan
(``ultralbm_edge.ops.triton.scan``), which both removes a hundred ops per block and keeps the
(batch, d_inner, L, d_state) intermediates out of device memory; the full-resolution stages run as fused
conv/norm/pool and upsampling kernels (``ops.triton.conv``, ``ops.triton.upsample``) and the blocks' conv branches
as one kernel each (``ops.triton.sepconv``).

Reduced precision runs under ``torch.autocast`` (fp16 or bf16 convolutions and matrix products). The model's
own upcasts (the authors' ``x.float()`` in LMBP/GLMBP) and the scan's fp32 arithmetic stay as they are.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..models import ScanStrategyMixin

Precision = Literal["fp32", "tf32", "fp16", "bf16"]
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


@contextmanager
def _conv_flags(allow_tf32: bool, benchmark: bool):
    """cuDNN settings while the graph's kernels are chosen (warm-up and capture); the graph keeps them.
    fp32 means fp32: PyTorch lets cuDNN use TF32 for convolutions by default, which moves the
    probabilities by up to ~1e-2 (see benchmarks/gpu.py) and breaks parity with the reference."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.benchmark = benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_in: Tensor  # device input the graph reads
    static_out: Tensor  # device output the graph writes (fp32)
    host_in: Tensor  # pinned staging buffers: asynchronous, full-bandwidth copies
    host_out: Tensor
    done: torch.cuda.Event


def _inductor_workarounds(compiling: bool):
    """Inductor (torch 2.11) fails on this model at batch >= 8 in its memory-coalescing tiling analysis
    (``TypeError: Expected a number but got Add``); compiling without that analysis works and stays exact.
    Inductor is imported only when compiling: its import pulls in TorchDynamo and sympy (~1.5 s of every process
    start, ~4 s where torch's bytecode is not cached)."""
    if not compiling:
        return nullcontext()
    import torch._inductor.config as inductor_config

    if not hasattr(inductor_config.triton, "coalesce_tiling_analysis"):
        return nullcontext()
    return inductor_config.patch({"triton.coalesce_tiling_analysis": False})


class CudaGraphRunner:
    """Runs ``model`` on a CUDA GPU by replaying one captured graph per batch size.

    ``run_device(x)`` takes a device tensor (benchmarks, training-time evaluation), which it copies into the
    graph's input unless ``x`` is that input (``input_buffer``); ``run(batch)`` takes a
    host float32 array (N, 3, H, W) and returns probabilities (N, 1, H, W) as float32, staging both copies
    through pinned memory. Graphs are captured on first use of a batch size (a second or so each);
    batches above ``max_batch`` are run in slices of ``max_batch``.
    ``precision``: "fp32" (exact: no TF32), "tf32" (TF32 convolutions and matrix products), "fp16" or "bf16"
    (autocast). ``cudnn_benchmark`` lets cuDNN time its algorithms per shape while warming up.
    ``compile=True`` first passes the model through ``torch.compile`` (fuses the elementwise and
    normalisation ops; costs a compile per batch size, ~50 s on an H100 host, cached on disk by Inductor;
    the fastest path at every batch size measured, benchmarks/results/gpu_h100.md).
    ``compile="max-autotune"`` also lets Inductor time Triton templates against cuBLAS for every matrix
    product and fuse their epilogues: at batch 1 the products become one small Triton kernel each instead of
    cuBLAS's split-K pairs (0.36 -> 0.32 ms on an H100), at batch 256 it changes nothing; ~150 s per batch size.
    ``fused`` (fp32 only, not with channels_last; also under compile, where Inductor calls the kernels as they
    are) sets ``model.fused_kernels``: the dense 3x3 conv stages run as Triton kernels (the conv with its
    GroupNorm statistics, then one norm + max-pool + GELU pass, ``ops.triton.conv``), each upsampling step
    applies the GroupNorm before it and the GELU + skip (or sigmoid) after it in the same kernel, the last one
    with the 1x1 head (``ops.triton.upsample``), and each LMBP/GLMBP conv branch is one kernel
    (``ops.triton.sepconv``).
    ``channels_last`` runs convolutions, pooling and resizing on NHWC tensors (faster cuDNN and resize kernels
    at large batches).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cuda",
        precision: Precision = "fp32",
        max_batch: int = 256,
        compile: bool | Literal["max-autotune"] = False,
        channels_last: bool = False,
        cudnn_benchmark: bool = True,
        scan: str = "triton",
        fused: bool = True,
    ) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("CudaGraphRunner needs a CUDA GPU, and PyTorch sees none")
        if precision not in ("fp32", "tf32", "fp16", "bf16"):
            raise ValueError(f"precision must be 'fp32', 'tf32', 'fp16' or 'bf16', got {precision!r}")
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"CudaGraphRunner runs on a CUDA device, got {self.device}")
        self.precision = precision
        self.max_batch = max_batch
        self.cudnn_benchmark = cudnn_benchmark
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        if compile not in (False, True, "max-autotune"):
            raise ValueError(f"compile must be False, True or 'max-autotune', got {compile!r}")
        self.compile = compile
        if isinstance(self.model, ScanStrategyMixin):
            self.model.set_scan_strategy(scan)
        if hasattr(self.model, "fused_kernels"):  # a network with fused inference kernels (UltraLBM-UNet)
            self.model.fused_kernels = fused and not channels_last
        self._forward: Callable[[Tensor], Tensor] = self.model
        self._graphs: dict[int, _Captured] = {}

    def _autocast(self):
        dtype = _AUTOCAST.get(self.precision)
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()

    def _infer(self, x: Tensor) -> Tensor:
        with torch.inference_mode(), self._autocast(), _conv_flags(self.precision != "fp32", self.cudnn_benchmark):
            return self._forward(x).float()

    def capture(self, batch: int, image_size: tuple[int, int] = (256, 256), channels: int = 3) -> None:
        """Capture the graph for ``batch`` now (otherwise done on first use)."""
        if batch in self._graphs:
            return
        if self.compile:
            # A fresh static compile per batch size: once captured, a graph no longer runs Python, so the
            # previous size's compiled code is not needed (and a recompile for a new size can go dynamic).
            torch._dynamo.reset()
            # Options, not mode="max-autotune": that mode would also capture Inductor's own CUDA graphs.
            autotune = {"max_autotune": True, "max_autotune_gemm_backends": "TRITON,ATEN"}
            options = autotune if self.compile == "max-autotune" else None
            self._forward = torch.compile(self.model, dynamic=False, options=options)
        # Normal (not inference) tensors, so that callers may copy into them inside or outside inference mode.
        with torch.cuda.device(self.device), torch.inference_mode(False):
            static_in = torch.zeros((batch, channels, *image_size), device=self.device)
            static_in = static_in.contiguous(memory_format=self.memory_format)
            static_in.uniform_(0.0, 255.0)  # realistic values while warming up (autotuning, cuDNN plans)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), _inductor_workarounds(bool(self.compile)):
                for _ in range(3):  # compile Triton kernels and pick cuDNN algorithms outside the capture
                    self._infer(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._infer(static_in)
            self._graphs[batch] = _Captured(
                graph=graph,
                static_in=static_in,
                static_out=static_out,
                host_in=torch.empty(static_in.shape, dtype=torch.float32, pin_memory=True),
                host_out=torch.empty(static_out.shape, dtype=torch.float32, pin_memory=True),
                done=torch.cuda.Event(),
            )

    def input_buffer(self, batch: int, image_size: tuple[int, int] = (256, 256), channels: int = 3) -> Tensor:
        """The device tensor the graph for ``batch`` reads. A producer on the GPU (e.g. preprocessing) may
        write a batch straight into it and call ``run_device(buffer)``, which then copies nothing. The buffer
        belongs to the graph: ``run()`` with the same batch size overwrites it, and a new image size for that
        batch size captures a new graph with a new buffer (ask again)."""
        return self._captured((batch, channels, *image_size)).static_in

    def run_device(self, x: Tensor) -> Tensor:
        """Probabilities for a device tensor ``x`` (N <= max_batch). The result is the graph's own output
        buffer, overwritten by the next call with the same batch size: clone it to keep it."""
        cap = self._captured(x.shape)
        if x is not cap.static_in:  # ``input_buffer`` hands out static_in itself
            cap.static_in.copy_(x, non_blocking=True)
        cap.graph.replay()
        return cap.static_out

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, 1, H, W) float32 for a host batch (N, C, H, W) float32 in [0, 255]."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise ValueError(f"expected a batch of shape (N, C, H, W), got {batch.shape}")
        parts = [self._run_slice(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_slice(self, batch: np.ndarray) -> np.ndarray:
        cap = self._captured(batch.shape)
        with torch.cuda.device(self.device):
            cap.host_in.copy_(torch.from_numpy(batch))  # multi-threaded, unlike a numpy assignment
            cap.static_in.copy_(cap.host_in, non_blocking=True)
            cap.graph.replay()
            cap.host_out.copy_(cap.static_out, non_blocking=True)
            cap.done.record()
            cap.done.synchronize()
        return cap.host_out.clone().numpy()

    def _captured(self, shape: torch.Size | tuple[int, ...]) -> _Captured:
        n, c, h, w = shape
        if n > self.max_batch:
            raise ValueError(f"batch of {n} exceeds max_batch={self.max_batch}")
        cap = self._graphs.get(n)
        if cap is None or tuple(cap.static_in.shape[1:]) != (c, h, w):
            self._graphs.pop(n, None)
            self.capture(n, (h, w), c)
            cap = self._graphs[n]
        return cap
