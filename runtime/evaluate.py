"""Accuracy of any model file on a labelled folder (DIR/images + DIR/masks), with the paper's metrics.

Predictions are compared at the model's resolution (256x256), as the authors' test code does: each ground-truth
mask goes through the same antialiased resize as the images and is binarised at 0.5.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .backends import Backend
from .dataset import load_pair, paired_files
from .metrics import ConfusionAccumulator


def evaluate(backend: Backend, data: Path | str, batch_size: int = 8, workers: int = 2) -> dict:
    """DSC, IoU, accuracy, sensitivity, specificity (one global confusion matrix) and mean per-image Dice."""
    data = Path(data)
    pairs = paired_files(data)
    size = backend.metadata.image_size
    acc = ConfusionAccumulator(backend.metadata.threshold)
    started = time.perf_counter()

    with ThreadPoolExecutor(max(1, workers)) as pool:
        loaded = pool.map(lambda pair: load_pair(*pair, size), pairs)
        batch_x: list[np.ndarray] = []
        batch_y: list[np.ndarray] = []
        for x, y in loaded:
            batch_x.append(x)
            batch_y.append(y)
            if len(batch_x) == batch_size:
                for p, t in zip(backend.run(np.stack(batch_x)), batch_y):
                    acc.add(p[0], t)
                batch_x, batch_y = [], []
        if batch_x:
            for p, t in zip(backend.run(np.stack(batch_x)), batch_y):
                acc.add(p[0], t)
    result = acc.result()
    result.update({"data": str(data), "threshold": backend.metadata.threshold, "seconds": round(time.perf_counter() - started, 2)})
    result.update({f"model_{k}": v for k, v in backend.describe().items()})
    return result
