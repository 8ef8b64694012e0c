"""The PyTorch backend for ``.pth`` checkpoints (development and reference; devices run ONNX or engines)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

from ultralbm_edge import __version__
from ultralbm_edge.checkpoint import CheckpointError, load_checkpoint
from ultralbm_edge.runtime.backends import BackendError
from ultralbm_edge.runtime.metadata import ModelMetadata

# Exact to the sequential reference and several times faster on the CPU (see tests/test_model.py).
CPU_SCAN = "chunked"
# On a GPU: the fused Triton kernel, run inside one CUDA graph per batch size (ultralbm_edge.gpu).
GPU_SCAN = "triton"


class TorchBackend:
    name = "torch"
    max_batch = None

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None, scan: str = CPU_SCAN) -> None:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            raise BackendError(str(e)) from None
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"{path}: device cuda asked for, but PyTorch sees no CUDA GPU — use --device cpu")
        if self.device.type == "cuda" and scan == CPU_SCAN:
            scan = GPU_SCAN
        self.model = ckpt.model.to(self.device).set_scan_strategy(scan)
        self._graphs = None
        if self.device.type == "cuda":
            from ultralbm_edge.gpu import CudaGraphRunner

            self._graphs = CudaGraphRunner(self.model, device=self.device, scan=scan)
        self.metadata = ModelMetadata(
            variant=ckpt.variant,
            channels=ckpt.channels,
            image_size=ckpt.image_size,
            preprocessing=ckpt.preprocessing,
            threshold=ckpt.threshold,
            toolkit_version=__version__,
            source_checkpoint_sha256=ckpt.sha256,
            scan_strategy=scan,
        )

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._graphs is not None:
            return self._graphs.run(batch)
        return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    def describe(self) -> dict[str, str]:
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine()
        return {"backend": self.name, "torch": torch.__version__, "device": gpu, "threads": str(torch.get_num_threads())}
