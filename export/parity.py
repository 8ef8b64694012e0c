"""Parity of an exported model against the PyTorch reference, on real dermoscopy images.

The reference is the checkpoint's model with the sequential scan (the recurrence exactly as written), run in
PyTorch fp32; the candidate is the exported file run by the runtime's backend. The contract and the comparison
are the runtime's (``runtime.parity``), shared with the tests and benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ultralbm_edge.models import ScanStrategyMixin
from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ultralbm_edge.runtime.parity import EXACT, ParityReport, Tolerances, compare


def reference_probs(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """The model's probabilities for ``images`` in fp32 PyTorch, its Mamba blocks on the sequential scan."""
    with torch.no_grad():
        if isinstance(model, ScanStrategyMixin):
            with model.using_scan("sequential"):
                return model(torch.from_numpy(images)).numpy()
        return model(torch.from_numpy(images)).numpy()


def check_parity(
    onnx_path: Path, reference: nn.Module, images: np.ndarray, threshold: float = 0.5, tolerances: Tolerances = EXACT
) -> ParityReport:
    """Run ``images`` through the ONNX file (the runtime's ONNX Runtime backend, CPU) and the reference model."""
    got = OnnxRuntimeBackend(onnx_path).run(images)
    return compare(got, reference_probs(reference, images), threshold, tolerances)
