"""The paper's segmentation metrics, computed as the authors' code does: one confusion matrix over all pixels of
all images at the model's resolution (predictions thresholded, ground truth at >= 0.5), plus the mean per-image
Dice that clinicians usually ask for."""

from __future__ import annotations

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (any dtype; non-zero is foreground); 1.0 when both are empty."""
    a, b = a.astype(bool, copy=False), b.astype(bool, copy=False)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


class ConfusionAccumulator:
    """Streams images into a global confusion matrix and per-image Dice scores."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.tp = self.fp = self.fn = self.tn = 0
        self.dices: list[float] = []

    def add(self, prob: np.ndarray, truth: np.ndarray) -> None:
        """``prob``: probabilities; ``truth``: ground truth in [0, 1] of the same shape."""
        p = prob >= self.threshold
        t = truth >= 0.5
        tp = int((p & t).sum())
        fp = int((p & ~t).sum())
        fn = int((~p & t).sum())
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        self.tn += int(p.size) - tp - fp - fn
        denom = 2 * tp + fp + fn
        self.dices.append(1.0 if denom == 0 else 2 * tp / denom)

    def result(self) -> dict[str, float | int]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn

        def ratio(a: int, b: int) -> float:
            return a / b if b else 0.0

        return {
            "dsc": ratio(2 * tp, 2 * tp + fp + fn),
            "iou": ratio(tp, tp + fp + fn),
            "accuracy": ratio(tp + tn, tp + tn + fp + fn),
            "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp),
            "mean_dice": float(np.mean(self.dices)) if self.dices else 0.0,
            "n_images": len(self.dices),
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        }


def segmentation_metrics(probs: np.ndarray, truths: np.ndarray, threshold: float = 0.5) -> dict[str, float | int]:
    """Metrics over a stack of probability maps and ground-truth masks (both (N, H, W), truths in [0, 1])."""
    acc = ConfusionAccumulator(threshold)
    for p, t in zip(probs, truths):
        acc.add(p, t)
    return acc.result()
