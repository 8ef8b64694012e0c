"""Small pieces shared by the networks of the VM-UNet line (UltraLight VM-UNet and its descendant UltraLBM-UNet):
token/image layout changes, their bilinear upsampling and the authors' weight initialisation."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def image_to_tokens(img: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C), row-major tokens."""
    b, c = img.shape[:2]
    return img.reshape(b, c, -1).transpose(1, 2)


def tokens_to_image(tokens: Tensor, hw: tuple[int, int]) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, *hw)


def up2(x: Tensor) -> Tensor:
    """The decoders' 2x bilinear upsampling (align_corners=True, as the authors')."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


def vm_unet_init(m: nn.Module) -> None:
    """The authors' ``_init_weights`` (``model.apply``), which also reaches Mamba's projections: trunc-normal(0.02)
    linears with zero bias (so Mamba's dt_proj.bias ends at 0, not at mamba_ssm's log-uniform dt), He-normal
    convs over fan-out."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.Conv1d):
        m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.out_channels)))
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            m.bias.data.zero_()
