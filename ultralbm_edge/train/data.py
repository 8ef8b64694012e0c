"""Datasets in the authors' layout (DIR/train/images, DIR/train/masks, DIR/val/...), preprocessed exactly as at
deployment (``runtime.preprocess``), held as tensors, and augmented in batches on the training device."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ultralbm_edge.runtime.dataset import load_pair, paired_files
from ultralbm_edge.runtime.preprocess import IMAGE_SIZE


def load_split(folder: Path, size: int = IMAGE_SIZE, limit: int | None = None, workers: int = 2) -> tuple[Tensor, Tensor]:
    """(images (N, 3, S, S) float32 in [0, 255], masks (N, 1, S, S) float32 in [0, 1]) for a split folder."""
    pairs = paired_files(Path(folder))[:limit]
    with ThreadPoolExecutor(workers) as pool:
        loaded = list(pool.map(lambda pair: load_pair(*pair, size), pairs))
    images = torch.from_numpy(np.stack([x for x, _ in loaded]))
    masks = torch.from_numpy(np.stack([m for _, m in loaded]).astype(np.float32))[:, None]
    return images, masks


def augment(images: Tensor, masks: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The authors' training augmentations, per sample: horizontal flip (p 0.5), vertical flip (p 0.5), rotation
    (p 0.5) by an angle drawn uniformly from [0, 360) for *each* sample (their code drew one angle at import time).
    Rotation is nearest-neighbour with zero fill, like torchvision's ``TF.rotate`` default that they use."""
    n, device = images.shape[0], images.device

    def coin() -> Tensor:
        return torch.rand(n, device=device, generator=generator) < 0.5

    x = torch.cat([images, masks], dim=1)
    hflip, vflip, rotate = coin(), coin(), coin()
    x = torch.where(hflip[:, None, None, None], x.flip(3), x)
    x = torch.where(vflip[:, None, None, None], x.flip(2), x)
    angle = torch.rand(n, device=device, generator=generator) * 2 * math.pi * rotate
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1), torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x[:, :3], x[:, 3:]
