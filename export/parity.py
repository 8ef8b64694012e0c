"""Parity of an exported model against the PyTorch reference, on real dermoscopy images.

The reference is the checkpoint's model with the sequential scan (the recurrence exactly as written), run in
PyTorch fp32; the candidate is the exported file run in ONNX Runtime. The tolerances are the project's contract
with the authors' outputs (max |diff| <= 5e-3, mean <= 1e-4, mask Dice >= 0.999 per image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ultralbm_edge.models import UltraLBMUNet
from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ultralbm_edge.runtime.imageio import find_images, read_image
from ultralbm_edge.runtime.preprocess import preprocess

MAX_ABS = 5e-3
MEAN_ABS = 1e-4
MIN_DICE = 0.999


@dataclass
class ParityReport:
    n_images: int
    max_abs_diff: float
    mean_abs_diff: float
    min_mask_dice: float
    max_tol: float = MAX_ABS
    mean_tol: float = MEAN_ABS
    dice_tol: float = MIN_DICE

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.max_tol and self.mean_abs_diff <= self.mean_tol and self.min_mask_dice >= self.dice_tol

    def summary(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        return (
            f"parity vs PyTorch on {self.n_images} real images: max |diff| {self.max_abs_diff:.2e} (tol {self.max_tol:.0e}), "
            f"mean {self.mean_abs_diff:.2e} (tol {self.mean_tol:.0e}), min mask Dice {self.min_mask_dice:.5f} "
            f"(tol {self.dice_tol}) — {verdict}"
        )

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * float((a & b).sum()) / denom


def load_parity_images(folder: Path, n: int, size: int) -> np.ndarray:
    """The first ``n`` images of ``folder`` (sorted), preprocessed to (n, 3, size, size)."""
    paths = find_images([folder])[:n]
    if not paths:
        raise FileNotFoundError(f"{folder}: no images for the parity check — pass --parity-images DIR or --no-check")
    return np.stack([preprocess(read_image(p), size) for p in paths])


def check_parity(
    onnx_path: Path,
    reference: UltraLBMUNet,
    images: np.ndarray,
    max_tol: float = MAX_ABS,
    mean_tol: float = MEAN_ABS,
    dice_tol: float = MIN_DICE,
    threshold: float = 0.5,
) -> ParityReport:
    """Run ``images`` through the ONNX file (the runtime's ONNX Runtime backend, CPU) and the reference model;
    compare probabilities and masks."""
    got = OnnxRuntimeBackend(onnx_path).run(images)
    previous = [m.scan_strategy for m in reference.modules() if hasattr(m, "scan_strategy")]
    reference.set_scan_strategy("sequential")
    try:
        with torch.no_grad():
            want = reference(torch.from_numpy(images)).numpy()
    finally:
        for m, s in zip((m for m in reference.modules() if hasattr(m, "scan_strategy")), previous):
            m.scan_strategy = s
    diff = np.abs(got - want)
    dices = [mask_dice(a >= threshold, b >= threshold) for a, b in zip(got, want)]
    return ParityReport(len(images), float(diff.max()), float(diff.mean()), float(min(dices)), max_tol, mean_tol, dice_tol)
