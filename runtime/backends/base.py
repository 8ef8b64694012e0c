"""The one contract every backend keeps (as Polygraphy's base runner): ``run`` checks and batches once, the
backend implements ``_infer`` for one batch it can take.

A backend takes an (N, 3, S, S) float32 batch, already preprocessed, and returns (N, 1, S, S) float32
probabilities. Graphs built for a fixed batch are fed full batches (the last one padded with copies of its last
image); graphs with a largest batch are fed slices of at most that size.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import UserError
from ..metadata import ModelMetadata


# Sigmoids computed in reduced precision may overshoot [0, 1] by a rounding step.
_PROB_SLACK = 1e-3


class BackendError(UserError, RuntimeError):
    """A model could not be opened or run; the message says which file and what to do."""


DEVICES_HELP = "cpu, cuda or cuda:N (the N-th GPU)"


def parse_device(device: str | None) -> tuple[str, int]:
    """``None``/"cpu" -> ("cpu", 0); "cuda" -> ("cuda", 0); "cuda:N" -> ("cuda", N); anything else is refused (a
    misspelt device must not silently run on the CPU)."""
    text = (device or "cpu").strip().lower()
    kind, _, index = text.partition(":")
    if kind == "cpu" and not index:
        return "cpu", 0
    if kind == "cuda" and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise BackendError(f"unknown device {device!r}; choose {DEVICES_HELP}")


class Backend:
    name: ClassVar[str]
    path: Path
    metadata: ModelMetadata
    # The largest batch one inference call takes (None: any); with ``fixed_batch`` exactly that many.
    max_batch: int | None = None
    fixed_batch: bool = False
    # Set by a wrapper that changes what ``run`` returns for the same model file (runtime.tta), else None.
    test_time_augmentation: str | None = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for one batch the model accepts as it is."""
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        """Device, library versions and execution provider, for benchmark reports."""
        raise NotImplementedError

    def batch_stages(self, batch_size: int = 8):  # -> runtime.predict.BatchStages | None
        """Faster stages for folder prediction in batches of ``batch_size`` on this backend's device (a GPU), or None
        for the CPU path."""
        return None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 in [0, 255] -> (N, 1, S, S) float32 probabilities, for any N."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.max_batch or len(batch)
        outputs = []
        for start in range(0, len(batch), max(1, step)):
            chunk = batch[start : start + step]
            pad = step - len(chunk) if self.fixed_batch else 0
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            outputs.append(self._checked(np.asarray(self._infer(chunk), dtype=np.float32), chunk.shape)[: len(chunk) - pad])
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def check_output_contract(self) -> None:
        """Run one probe image (a fixed pattern spanning [0, 255]) through the model, so a model file whose output is
        not a probability map is refused when it is opened, before any folder is touched."""
        size = self.metadata.image_size
        ramp = np.linspace(0.0, 255.0, size * size, dtype=np.float32).reshape(size, size)
        self.run(np.stack([ramp, ramp.T, ramp[::-1]])[None])

    def _checked(self, probs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The output contract, on every batch: one probability map per image, finite, within [0, 1]. A model that
        returns anything else (logits, the image itself) would otherwise become whole-image masks marked ok."""
        n, _, h, w = shape
        if probs.shape != (n, 1, h, w):
            raise BackendError(f"{self.path}: returned shape {probs.shape} for a batch of {shape}, not (N, 1, H, W) — re-export the model")
        lo, hi = float(probs.min()), float(probs.max())
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= -_PROB_SLACK and hi <= 1 + _PROB_SLACK):
            raise BackendError(
                f"{self.path}: returned values in [{lo:.3g}, {hi:.3g}], not probabilities in [0, 1] — this is not a "
                "segmentation model exported by ultralbm-edge (or its output lost the sigmoid); re-export it"
            )
        return probs
