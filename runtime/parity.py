"""The project's exactness contract, and the one comparison every parity check uses.

A candidate (an exported file in some runtime, a GPU path, a kernel) is *exact* against its reference when, over
real images, the probabilities differ by at most 5e-3 anywhere and 1e-4 on average, and every thresholded mask
keeps a Dice of at least 0.999. Exports are refused, tests fail and benchmarks report against these numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .metrics import dice


@dataclass(frozen=True)
class Tolerances:
    max_abs: float = 5e-3
    mean_abs: float = 1e-4
    min_dice: float = 0.999


EXACT = Tolerances()
# Half-precision internals (scan, norms and sigmoid kept FP32): masks still agree, probabilities less tightly.
FP16 = Tolerances(max_abs=5e-2, mean_abs=1e-3, min_dice=0.99)


@dataclass
class ParityReport:
    n_images: int
    max_abs_diff: float
    mean_abs_diff: float
    min_mask_dice: float
    tolerances: Tolerances = EXACT
    reference: str = "PyTorch"
    runtime: str = ""  # what ran the candidate, when a check covers several runtimes

    @property
    def ok(self) -> bool:
        t = self.tolerances
        return self.max_abs_diff <= t.max_abs and self.mean_abs_diff <= t.mean_abs and self.min_mask_dice >= t.min_dice

    def summary(self) -> str:
        t = self.tolerances
        return (
            (f"{self.runtime}: " if self.runtime else "")
            + f"parity vs {self.reference} on {self.n_images} real images: max |diff| {self.max_abs_diff:.2e} "
            f"(tol {t.max_abs:.0e}), mean {self.mean_abs_diff:.2e} (tol {t.mean_abs:.0e}), min mask Dice "
            f"{self.min_mask_dice:.5f} (tol {t.min_dice}) — {'PASS' if self.ok else 'FAIL'}"
        )

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def compare(
    got: np.ndarray,
    want: np.ndarray,
    threshold: float = 0.5,
    tolerances: Tolerances = EXACT,
    reference: str = "PyTorch",
) -> ParityReport:
    """Compare probability maps ``got`` with ``want`` (same shape, first axis = images)."""
    if got.shape != want.shape:
        raise ValueError(f"parity needs equal shapes, got {got.shape} and {want.shape}")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    dices = [dice(a >= threshold, b >= threshold) for a, b in zip(got, want)]
    return ParityReport(len(got), float(diff.max()), float(diff.mean()), float(min(dices)), tolerances, reference)
