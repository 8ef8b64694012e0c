"""Folder prediction on a CUDA GPU: the per-image numpy work moved next to the model.

On the CPU path each image's preprocessing (min-max scaling and an antialiased resize in float64) and the resize
of its probability map back to the image's size run in Python threads; at thousands of images a second those
small numpy calls, serialised by the GIL, are what the GPU waits for. Here the worker threads only decode (the
JPEG decoder releases the GIL); the GPU does the rest in a few batched kernels per image size: min-max and the
antialiased resize (PyTorch's own kernel, the one the authors' preprocessing used; float64, as the reference),
writing straight into the CUDA graph's input buffer, then the model, then the bilinear resize to each image's size
and the threshold. Only the 0/1 masks and the probability maps come back; the workers clean the masks (specks,
holes) and write the files, as on the CPU path.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from ultralbm_edge.runtime.predict import BatchStages, Inferred

from .graph_runner import CudaGraphRunner


class GpuBatchStages(BatchStages):
    preprocess_in_workers = False
    worker_processes = True

    def __init__(self, runner: CudaGraphRunner, image_size: int, batch_size: int) -> None:
        self.runner = runner
        self.size = image_size
        # Every batch goes through one graph of this size (the last one padded): capturing a graph per leftover
        # batch size would cost a second each.
        self.batch_size = batch_size

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
