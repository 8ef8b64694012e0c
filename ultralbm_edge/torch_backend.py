"""The PyTorch backend for ``.pth`` checkpoints (development, reference, and the fast path on a CUDA GPU).

It lives beside the model code, not in ``runtime/backends``: the runtime layer never imports torch (an
import-linter contract), and the format table names this class by import path, so it is imported only when a
``.pth`` model is opened.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

from ultralbm_edge.checkpoint import CheckpointError, load_checkpoint
from ultralbm_edge.runtime.backends.base import Backend, BackendError, parse_device

# Exact to the sequential reference and several times faster on the CPU (see tests/test_model.py).
CPU_SCAN = "chunked"
# On a GPU: the fused Triton kernel, run inside one CUDA graph per batch size (ultralbm_edge.gpu).
GPU_SCAN = "triton"


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, path: Path, threads: int | None = None, device: str | None = None, scan: str = CPU_SCAN, compile: bool = False
    ) -> None:
        self.path = Path(path)
        kind, index = parse_device(device)
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            raise BackendError(str(e)) from None
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(kind, index) if kind == "cuda" else torch.device("cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"{path}: device {device} asked for, but PyTorch sees no CUDA GPU — use --device cpu")
        if self.device.type == "cuda" and scan == CPU_SCAN:
            scan = GPU_SCAN
        if compile and self.device.type != "cuda":
            raise BackendError(f"{path}: --compile builds CUDA graphs with torch.compile; it needs --device cuda")
        self.model = ckpt.model.to(self.device).set_scan_strategy(scan)
        self._graphs = None
        if self.device.type == "cuda":
            from ultralbm_edge.gpu import CudaGraphRunner

            self._graphs = CudaGraphRunner(self.model, device=self.device, scan=scan, compile=compile)
        self.metadata = ckpt.metadata(scan_strategy=scan)

    @torch.inference_mode()
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._graphs is not None:
            return self._graphs.run(batch)
        return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    def batch_stages(self, batch_size: int = 64):
        """On a GPU: preprocessing and resizing next to the model (``gpu.batch_stages``); on the CPU, the default."""
        if self._graphs is None:
            return None
        from ultralbm_edge.gpu.batch_stages import GpuBatchStages

        return GpuBatchStages(self._graphs, self.metadata.image_size, batch_size)

    def describe(self) -> dict[str, str]:
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine()
        return {"backend": self.name, "torch": torch.__version__, "device": gpu, "threads": str(torch.get_num_threads())}
