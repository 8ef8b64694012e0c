"""Memory shared with forked worker processes, in fixed-size slots: what crosses the pipes is an offset and a shape.

Folder prediction with GPU stages hands every image to the main process and back: the decoded pixels in, the
probability map and the mask out, about 0.5 MB per 256-px image. Pickled through ProcessPoolExecutor's pipes, that
costs the main process's one thread about 100 µs per image (dumps and loads measured on the 2-core CI machine; the
H200 infers a batch of 64 in about 6 ms), the serial part that kept the GPU waiting. A shared anonymous mapping made before the workers
fork is the same memory in all of them; each image in flight owns one slot from its decode to its written mask, and an
array that does not fit its slot (a photo of many megapixels) travels pickled as before.
"""

from __future__ import annotations

import math
import mmap
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_ALIGN = 64  # each array starts on a cache line
SLOT_ALIGN = 64 << 10  # slot sizes are rounded up to this


@dataclass(frozen=True)
class SharedArray:
    """Where an array lies in a ``SlotPool`` (picklable: its offset, shape and dtype, not its data)."""

    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def end(self) -> int:
        return self.offset + math.prod(self.shape) * _dtype(self.dtype).itemsize


class SlotPool:
    """``count`` slots of ``slot_bytes`` each in one shared anonymous mapping. Create it before the worker processes
    fork (they inherit the mapping); hand slots out and back from one thread of the parent only."""

    def __init__(self, count: int, slot_bytes: int) -> None:
        self.slot_bytes = slot_bytes
        self._buffer = mmap.mmap(-1, count * slot_bytes)  # MAP_SHARED | MAP_ANONYMOUS: not limited by /dev/shm's size
        self._free = deque(range(count))

    def acquire(self) -> int | None:
        """A free slot, or None when every slot is in flight (the caller waits for writes to finish)."""
        return self._free.popleft() if self._free else None

    def release(self, slot: int | None) -> None:
        if slot is not None:
            self._free.append(slot)

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def address(self) -> int:
        """Where the mapping starts in this process (to register it with a GPU driver as pinned memory)."""
        return np.frombuffer(self._buffer, np.uint8).ctypes.data

    @property
    def nbytes(self) -> int:
        return len(self._buffer)

    def reserve(self, slot: int, specs: Sequence[tuple[tuple[int, ...], str] | None], after: SharedArray | None = None) -> list:
        """Room in ``slot`` for arrays of these (shape, dtype), one after another (after ``after``, an array already
        there to keep): a ``SharedArray`` for each that fits, None for each that does not (or whose spec is None)."""
        end = (slot + 1) * self.slot_bytes
        pos = _aligned(after.end) if after is not None else slot * self.slot_bytes
        refs: list = []
        for spec in specs:
            ref = SharedArray(pos, tuple(spec[0]), _dtype(spec[1]).str) if spec is not None else None
            if ref is None or ref.end > end:
                refs.append(None)
                continue
            refs.append(ref)
            pos = _aligned(ref.end)
        return refs

    def place(self, slot: int, arrays: Sequence[np.ndarray | None], after: SharedArray | None = None) -> list:
        """Copy ``arrays`` into ``slot`` as ``reserve`` lays them out; each comes back as its ``SharedArray``, or itself
        when it does not fit (it then travels pickled)."""
        refs = self.reserve(slot, [(a.shape, a.dtype.str) if a is not None else None for a in arrays], after)
        for array, ref in zip(arrays, refs):
            if ref is not None:
                np.copyto(self.get(ref), array)
        return [ref if ref is not None else array for array, ref in zip(arrays, refs)]

    def get(self, item):
        """The array a ``SharedArray`` refers to (a view of the shared memory); anything else is returned as it is."""
        if not isinstance(item, SharedArray):
            return item
        return np.ndarray(item.shape, np.dtype(item.dtype), buffer=self._buffer, offset=item.offset)


def slot_layout_bytes(arrays: Sequence[tuple[int, ...]]) -> int:
    """Bytes a slot needs for these arrays one after another, each given as (*shape, itemsize), as ``reserve``
    lays them out."""
    pos = 0
    for *shape, itemsize in arrays:
        pos = _aligned(pos) + math.prod(shape) * itemsize
    return pos


@lru_cache(maxsize=64)
def _dtype(spec: str) -> np.dtype:
    """``np.dtype(spec)``, made once per spec: the GPU stages lay out two arrays per image in the main thread, where
    constructing dtypes was a tenth of the layout's cost."""
    return np.dtype(spec)


def _aligned(pos: int) -> int:
    return -(-pos // _ALIGN) * _ALIGN
