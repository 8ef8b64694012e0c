"""Attention blocks that ResMamba-ULite and DermoMamba share (the two repositories carry identical copies).

* :class:`CBAM`: Woo et al.'s convolutional block attention module as both repos copy it (``module/cbam.py``,
  ``module/CBAM.py``): a channel gate (a shared MLP on the global average and max pools, reduction 16), then a
  spatial gate (channel max and mean -> 7x7 conv -> BatchNorm(momentum 0.01) -> sigmoid). Attribute names keep the
  authors' capitals (``ChannelGate``, ``SpatialGate``) and ``Sequential`` indices (``mlp.1``, ``mlp.3``), so their
  state_dict keys load.
* :class:`PCA`: "priority channel attention": a depthwise 9x9 conv, gated per channel by
  sigmoid(c' (1 + softmax_over_channels(c' - c))), with c and c' the channel means before and after the conv.

Global pools are written as ``mean``/``amax`` over (H, W) rather than the authors' whole-map ``avg_pool2d`` /
``max_pool2d`` or einops ``reduce``: the same values, and they export as plain ReduceMean/ReduceMax.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BasicConv(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-5, momentum 0.01); CBAM's spatial gate uses it without activation."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.out_channels = out_planes
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class ChannelGate(nn.Module):
    def __init__(self, gate_channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        self.gate_channels = gate_channels
        hidden = gate_channels // reduction_ratio
        # Index 0 is the authors' Flatten (no parameters), so the keys are mlp.1.* and mlp.3.*.
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(gate_channels, hidden), nn.ReLU(), nn.Linear(hidden, gate_channels))

    def forward(self, x: Tensor) -> Tensor:
        att = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))  # the authors' order: avg, then max
        return x * torch.sigmoid(att)[:, :, None, None]


class SpatialGate(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.spatial = BasicConv(2, 1, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        compressed = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)  # max first
        return x * torch.sigmoid(self.spatial(compressed))


class CBAM(nn.Module):
    def __init__(self, gate_channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio)  # noqa: N815 - the authors' key
        self.SpatialGate = SpatialGate()  # noqa: N815

    def forward(self, x: Tensor) -> Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class PCA(nn.Module):
    """Priority channel attention; ``dw`` is its only parameterised layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, kernel_size=9, groups=dim, padding=4)  # the authors' padding="same"

    def forward(self, x: Tensor) -> Tensor:
        c = x.mean(dim=(2, 3))
        x = self.dw(x)
        c_ = x.mean(dim=(2, 3))
        att = torch.sigmoid(c_ * (1 + torch.softmax(c_ - c, dim=1)))
        return x * att[:, :, None, None]
