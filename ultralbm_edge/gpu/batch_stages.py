"""Folder prediction on a CUDA GPU: the per-image numpy work moved next to the model.

On the CPU path each image's preprocessing (min-max scaling and an antialiased resize in float64) and the resize
of its probability map back to the image's size run in Python threads; at thousands of images a second those
small numpy calls, serialised by the GIL, are what the GPU waits for. Here the worker threads only decode (the
JPEG decoder releases the GIL); the GPU does the rest in a few batched kernels per image size: min-max and the
antialiased resize (PyTorch's own kernel, the one the authors' preprocessing used; float64, as the reference),
writing straight into the CUDA graph's input buffer, then the model, then the bilinear resize to each image's size
and the threshold. Only the 0/1 masks and the probability maps come back; the workers clean the masks (specks,
holes) and write the files, as on the CPU path.

The worker processes hand the images over in shared memory (``runtime.shared_slots``). Mapped into the GPU's address
space (``mapped_memory``), the slots are read and written by the GPU's own kernels, a few per batch: the main
process, whose one thread is the serial part of a run, moves no pixels itself (profiled on an H200, stacking the
images and copying the maps and masks into the slots took 45 % of its time; one ``copy_`` per image and output,
about 60 %), and it only queues the work: while the GPU computes a batch, the main process hands the previous one
over to be written.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ultralbm_edge.runtime.predict import BatchOutputs, BatchStages, Inferred
from ultralbm_edge.runtime.shared_slots import SharedArray, SlotPool, slot_layout_bytes

from .graph_runner import CudaGraphRunner
from .mapped_memory import map_host_memory, unmap_host_memory


class GpuBatchStages(BatchStages):
    preprocess_in_workers = False
    worker_processes = True
    # Pinned pages stay in RAM for the whole run (about 0.8 GB at batch 64); above this the slots stay pageable.
    max_pinned_bytes = 4 << 30

    def __init__(self, runner: CudaGraphRunner, image_size: int, batch_size: int) -> None:
        self.runner = runner
        self.size = image_size
        # Every batch goes through one graph of this size (the last one padded): capturing a graph per leftover
        # batch size would cost a second each.
        self.batch_size = batch_size
        self._maps: dict[int, torch.Tensor | None] = {}  # id(SlotPool) -> its slots as a CUDA tensor (None: not mapped)

    @torch.inference_mode()
    def infer(self, items: list, threshold: float) -> list[Inferred]:
        n, s = len(items), self.size
        buffer = self.runner.input_buffer(max(n, self.batch_size), (s, s))
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            groups[(item.height, item.width)].append(i)
        for (h, w), index in groups.items():
            rgb = torch.from_numpy(np.stack([items[i].rgb for i in index])).to(self.runner.device, non_blocking=True)
            buffer[index] = preprocess_on_device(rgb, s)
        probs = self.runner.run_device(buffer)[:n]
        outputs: list[Inferred | None] = [None] * n
        model_probs = probs[:, 0].float().cpu().numpy()
        for (h, w), index in groups.items():
            full = probs[index] if (h, w) == (s, s) else F.interpolate(probs[index], size=(h, w), mode="bilinear", align_corners=False)
            masks = (full >= threshold).to(torch.uint8)[:, 0].cpu().numpy()
            for k, i in enumerate(index):
                # The full-size map stays on the GPU: the workers need it only for the mask's statistics, and
                # resize the (S, S) map themselves for that, a fraction of the bytes to copy and pickle.
                outputs[i] = Inferred(model_probs[i], None, masks[k])
        return outputs  # type: ignore[return-value]

    def launch(self, items: list, threshold: float, slots: SlotPool | None, keep_pixels: bool) -> BatchOutputs:
        mapped = self._mapped(slots) if slots is not None else None
        if mapped is None:
            return super().launch(items, threshold, slots, keep_pixels)
        with torch.inference_mode():
            return self._launch_mapped(items, threshold, slots, mapped, keep_pixels)  # type: ignore[arg-type]

    def slot_bytes(self, height: int, width: int, size: int, keep_pixels: bool) -> int:
        # The map and the mask go after the pixels when those are kept (overlays), else over them (``launch``).
        outputs = [(size, size, 4), (height, width, 1)]
        return max(slot_layout_bytes([(height, width, 3), *outputs]) if keep_pixels else slot_layout_bytes(outputs), height * width * 3)

    def close(self, slots: SlotPool | None) -> None:
        if slots is not None and self._maps.pop(id(slots), None) is not None:
            unmap_host_memory(slots.address, self.runner.device)

    def _mapped(self, slots: SlotPool) -> torch.Tensor | None:
        """The slots as a CUDA tensor (pinned, mapped host memory), or None: they stay pageable."""
        if id(slots) not in self._maps:
            mapped, why = None, f"the slots take {slots.nbytes >> 20} MB, over the {self.max_pinned_bytes >> 20} MB pinned at most"
            if slots.nbytes <= self.max_pinned_bytes:
                mapped, why = map_host_memory(slots.address, slots.nbytes, self.runner.device)
            if mapped is None:
                warnings.warn(f"GPU folder prediction: the shared slots are not pinned ({why}); images are copied through pageable memory (slower)")
            self._maps[id(slots)] = mapped
        return self._maps[id(slots)]

    def _launch_mapped(self, items: list, threshold: float, slots: SlotPool, mapped: torch.Tensor, keep_pixels: bool) -> BatchOutputs:
        """Queue the batch on the GPU and return at once: per image size, the images gathered from their slots by one
        kernel, the model, the maps and the masks scattered back into the slots by one kernel each; the outputs are
        ready when the GPU reaches the recorded event. (Per-image Python or copy calls cost this thread ~10-30 µs
        each; measured on the H200, they were half of its time.)"""
        n, s, device = len(items), self.size, self.runner.device
        rows = mapped.view(-1, slots.slot_bytes)  # a slot per row; a worker puts an image's pixels at its row's start
        buffer = self.runner.input_buffer(max(n, self.batch_size), (s, s))
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            groups[(item.height, item.width)].append(i)
        slot_ids: dict[tuple[int, int], torch.Tensor] = {}  # per image size, its images' slots (on the GPU)
        for (h, w), index in groups.items():
            if all(isinstance(items[i].rgb, SharedArray) for i in index):
                slot_ids[(h, w)] = _on_device([items[i].slot for i in index], device)
                rgb = rows[:, : h * w * 3].index_select(0, slot_ids[(h, w)]).view(-1, h, w, 3)
            else:  # an image too large for its slot was pickled: copied from pageable memory (the call blocks)
                rgb = torch.stack([_view(mapped, items[i].rgb) if isinstance(items[i].rgb, SharedArray) else torch.from_numpy(items[i].rgb).to(device)
                                   for i in index])  # fmt: skip
            buffer[_rows_of(index, device)] = preprocess_on_device(rgb, s)
        probs = self.runner.run_device(buffer)[:n]
        outputs: list[Inferred | None] = [None] * n
        for (h, w), index in groups.items():
            group_probs = probs[_rows_of(index, device)]
            full = group_probs if (h, w) == (s, s) else F.interpolate(group_probs, size=(h, w), mode="bilinear", align_corners=False)
            masks = (full >= threshold).to(torch.uint8)[:, 0]
            refs = []
            for i in index:
                item = items[i]
                keep = item.rgb if keep_pixels and isinstance(item.rgb, SharedArray) else None
                refs.append(slots.reserve(item.slot, [((s, s), "<f4"), ((h, w), "|u1")], after=keep) if item.slot is not None else [None, None])
            starts = {tuple(ref.offset - items[i].slot * slots.slot_bytes if ref is not None else None for ref in pair) for i, pair in zip(index, refs)}
            if len(starts) == 1 and None not in (place := starts.pop()):  # every map and mask at the same place in its slot
                ids = slot_ids[(h, w)] if (h, w) in slot_ids else _on_device([items[i].slot for i in index], device)
                for start, out in zip(place, (group_probs[:, 0], masks)):
                    flat = out.reshape(len(index), -1).view(torch.uint8)
                    rows[:, start : start + flat.shape[1]].index_copy_(0, ids, flat)
                placed = refs
            else:
                placed = [[_copy_back(mapped, ref, t) for ref, t in zip(pair, (probs[i, 0], masks[k]))] for k, (i, pair) in enumerate(zip(index, refs))]
            for i, (prob, mask) in zip(index, placed):
                outputs[i] = Inferred(prob, None, mask)
        done = torch.cuda.Event()
        done.record()
        return _Queued(done, outputs)  # type: ignore[arg-type]


def _rows_of(index: list[int], device: torch.device) -> slice | torch.Tensor:
    """Batch rows to index with: a slice when they follow each other (a folder of one image size), else an index
    tensor on the GPU. (A Python list would be copied from pageable memory, which waits for the GPU's queue.)"""
    if index == list(range(index[0], index[0] + len(index))):
        return slice(index[0], index[0] + len(index))
    return _on_device(index, device)


def _on_device(values: list[int], device: torch.device) -> torch.Tensor:
    """A small index tensor on the GPU, copied without waiting for the GPU's queue (through pinned memory)."""
    return torch.tensor(values, dtype=torch.int64, pin_memory=True).to(device, non_blocking=True)


def _copy_back(mapped: torch.Tensor, ref: SharedArray | None, t: torch.Tensor) -> SharedArray | np.ndarray:
    """Queue the copy of one output into its place in a slot, or into pinned memory of its own when it does not fit
    its slot (it then travels pickled)."""
    if ref is None:
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        return host.numpy()  # read only after the batch's event (``_Queued.result``)
    _view(mapped, ref).copy_(t, non_blocking=True)
    return ref


def _view(mapped: torch.Tensor, ref: SharedArray) -> torch.Tensor:
    """The CUDA tensor over the slots' bytes that ``ref`` describes."""
    return mapped[ref.offset : ref.end].view(getattr(torch, np.dtype(ref.dtype).name)).view(ref.shape)


def preprocess_on_device(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB on the GPU -> (N, 3, size, size) float32, as ``runtime.preprocess.preprocess``: per-image
    min-max over all channels to [0, 255], then the antialiased bilinear resize, in float64 (a constant image maps to
    zeros)."""
    x = rgb.permute(0, 3, 1, 2).double()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = x.amax(dim=(1, 2, 3), keepdim=True) - lo
    x = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0) * 255.0, torch.zeros_like(x))
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.float()


@dataclass
class _Queued:
    """A batch's outputs, written into host memory by the work the GPU has queued up to ``done``."""

    done: torch.cuda.Event
    outputs: list[Inferred]

    def ready(self) -> bool:
        return self.done.query()

    def result(self) -> list[Inferred]:
        self.done.synchronize()
        return self.outputs
