"""The one contract every backend keeps (as Polygraphy's base runner): ``run`` checks and batches once, the
backend implements ``_infer`` for one batch it can take.

A backend takes an (N, 3, S, S) float32 batch, already preprocessed, and returns (N, 1, S, S) float32
probabilities. Graphs built for a fixed batch are fed full batches (the last one padded with copies of its last
image); graphs with a largest batch are fed slices of at most that size.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..metadata import ModelMetadata


class BackendError(RuntimeError):
    """A model could not be opened or run; the message says which file and what to do."""


class Backend:
    name: ClassVar[str]
    metadata: ModelMetadata
    # The largest batch one inference call takes (None: any); with ``fixed_batch`` exactly that many.
    max_batch: int | None = None
    fixed_batch: bool = False

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for one batch the model accepts as it is."""
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        """Device, library versions and execution provider, for benchmark reports."""
        raise NotImplementedError

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
            outputs.append(np.asarray(self._infer(chunk), dtype=np.float32)[: len(chunk) - pad])
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
