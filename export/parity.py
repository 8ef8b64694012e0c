"""Parity of an exported model against the PyTorch reference, on real dermoscopy images, on every installed
runtime that can run it.

The reference is the checkpoint's model with the sequential scan (the recurrence exactly as written), run in
PyTorch fp32; the candidate is the exported file run by each runtime's backend: ONNX Runtime as the backend opens
it (a ``portable`` file with its scans swapped to LinearAttention where this onnxruntime has the op) and, for a
portable file, also its stock Scan graph (what older onnxruntime runs); OpenVINO when it is installed and can read
the form. The contract and the comparison are the runtime's (``runtime.parity``), shared with the tests and
benchmarks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ultralbm_edge.models import ScanStrategyMixin
from ultralbm_edge.runtime.backends.base import Backend, BackendError
from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ultralbm_edge.runtime.backends.ort_scan_swap import MIN_ORT_VERSION, supports_linear_attention
from ultralbm_edge.runtime.parity import EXACT, ParityReport, Tolerances, compare

from .scan_policy import OPENVINO_UNREADABLE


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


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def onnx_runtimes(path: Path, scan: str) -> list[tuple[str, Callable[[], Backend]]]:
    """(label, backend factory) for every installed runtime that runs ``scan`` exports, the default load first."""
    runs: list[tuple[str, Callable[[], Backend]]] = []
    if scan == "portable" and supports_linear_attention(ort.__version__):
        runs.append((f"onnxruntime {ort.__version__}, scans swapped to LinearAttention", lambda: _swapped(path)))
        runs.append((f"onnxruntime {ort.__version__}, stock Scan graph (onnxruntime < {MIN_ORT_VERSION})",
                     lambda: OnnxRuntimeBackend(path, swap_scan=False)))  # fmt: skip
    else:
        runs.append((f"onnxruntime {ort.__version__}", lambda: OnnxRuntimeBackend(path)))
    if scan not in OPENVINO_UNREADABLE and openvino_installed():
        from ultralbm_edge.runtime.backends.openvino_backend import LABEL, OpenVinoBackend

        runs.append((LABEL, lambda: OpenVinoBackend(path)))
    return runs


def _swapped(path: Path) -> OnnxRuntimeBackend:
    """The ONNX Runtime backend on a portable file, which must have swapped its scans (a record that does not fit
    the graph would otherwise pass unnoticed: the stock graph is exact too, only slower)."""
    backend = OnnxRuntimeBackend(path)
    if not backend.scan_form.startswith("linear_attention"):
        raise BackendError(f"{path}: the LinearAttention scan swap did not apply: {backend.scan_form}")
    return backend


def check_parity_on(
    runtimes: list[tuple[str, Callable[[], Backend]]], reference: nn.Module, images: np.ndarray,
    threshold: float = 0.5, tolerances: Tolerances = EXACT,
) -> list[ParityReport]:  # fmt: skip
    """One report per runtime, each labelled; a runtime that cannot open the file raises its BackendError."""
    want = reference_probs(reference, images)
    reports = []
    for label, open_it in runtimes:
        report = compare(open_it().run(images), want, threshold, tolerances)
        report.runtime = label
        reports.append(report)
    return reports
