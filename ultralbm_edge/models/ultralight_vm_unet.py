"""UltraLight VM-UNet (Wu et al., Patterns 2025, arXiv:2403.20035), module-for-module as in the authors' code.

Official code: github.com/wurenkai/UltraLight-VM-UNet (MIT licence), ``models/UltraLight_VM_UNet.py``. Module names
equal the authors', so their state_dicts load unchanged (``best.pth``, or ``model_state_dict`` of their resume
file). Their training script builds ``UltraLight_VM_UNet(num_classes=1, input_channels=3, c_list=[8, 16, 24, 32,
48, 64], split_att='fc', bridge=True)`` for ISIC 2017/2018 and PH2 at 256x256, the configuration registered here
(49,457 parameters; paper: 0.049M). Their other options (``split_att='conv'``, ``bridge=False``) are not.

The network: three 3x3-conv encoder stages, then PVM layers (one Mamba shared by the four channel quarters, a
skip scale, LayerNorm before and after, a linear projection) at stages IV-VI and decoders I-III, GroupNorm(4, c)
after every stage, and a spatial-then-channel attention bridge (SC_Att_Bridge) on the five skips. It is the
direct ancestor of UltraLBM-UNet (``ultralbm_unet``: the same skeleton, names and init).

Input: exactly this project's preprocessing. The authors' loader min-max scales each resized image to [0, 255]
(their dataset mean/std cancel out), and ``forward`` ends with a sigmoid, so nothing is adapted.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._layers import image_to_tokens, tokens_to_image, up2, vm_unet_init
from ._registry import ModelSpec, register_model
from .mamba import Mamba, ScanStrategyMixin

SKIN_CHANNELS = (8, 16, 24, 32, 48, 64)


class PVMLayer(nn.Module):
    """Parallel Vision Mamba layer: LayerNorm, one Mamba on each channel quarter (shared weights) plus
    ``skip_scale`` times its input, LayerNorm again, a linear projection to ``output_dim``."""

    def __init__(self, input_dim: int, output_dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        assert input_dim % 4 == 0, "PVMLayer splits channels into four quarters"
        self.input_dim, self.output_dim = input_dim, output_dim
        self.norm = nn.LayerNorm(input_dim)
        self.mamba = Mamba(d_model=input_dim // 4, d_state=d_state, d_conv=d_conv, expand=expand)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float16:  # the authors upcast fp16 (only fp16) here
            x = x.float()
        hw = (x.shape[2], x.shape[3])
        parts = torch.chunk(self.norm(image_to_tokens(x)), 4, dim=2)
        # The four Mamba calls share weights, so they run as one call on a 4x batch.
        b = parts[0].shape[0]
        y = self.mamba(torch.cat(parts, dim=0))
        out = torch.cat([y[i * b : (i + 1) * b] + self.skip_scale * p for i, p in enumerate(parts)], dim=2)
        return tokens_to_image(self.proj(self.norm(out)), hw)


class Channel_Att_Bridge(nn.Module):  # noqa: N801 - the authors' names are their state_dict's keys
    """Channel attention shared by the five skips: their global average pools, concatenated, a 1-D conv over the
    concatenation, then one linear layer per skip and a sigmoid."""

    def __init__(self, c_list: Sequence[int]) -> None:
        super().__init__()
        c_sum = sum(c_list) - c_list[-1]
        self.get_all_att = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
        for i in range(5):
            setattr(self, f"att{i + 1}", nn.Linear(c_sum, c_list[i]))

    def forward(self, *skips: Tensor) -> list[Tensor]:
        pooled = torch.cat([t.mean(dim=(2, 3)) for t in skips], dim=1)  # (B, c_sum): the authors' AdaptiveAvgPool2d(1)
        att = self.get_all_att(pooled.unsqueeze(1))  # (B, 1, c_sum)
        heads = [getattr(self, f"att{i + 1}") for i in range(len(skips))]
        return [torch.sigmoid(head(att)).transpose(1, 2).unsqueeze(-1).expand_as(t) for head, t in zip(heads, skips)]


class Spatial_Att_Bridge(nn.Module):  # noqa: N801
    """Spatial attention shared by the five skips: channel mean and max -> dilated 7x7 conv -> sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.shared_conv2d = nn.Sequential(nn.Conv2d(2, 1, 7, stride=1, padding=9, dilation=3), nn.Sigmoid())

    def forward(self, *skips: Tensor) -> list[Tensor]:
        return [self.shared_conv2d(torch.cat([t.mean(dim=1, keepdim=True), t.amax(dim=1, keepdim=True)], dim=1)) for t in skips]


class SC_Att_Bridge(nn.Module):  # noqa: N801
    """Spatial attention with a residual, then channel attention with a residual, on the five skips."""

    def __init__(self, c_list: Sequence[int]) -> None:
        super().__init__()
        self.catt = Channel_Att_Bridge(c_list)
        self.satt = Spatial_Att_Bridge()

    def forward(self, *skips: Tensor) -> list[Tensor]:
        spatial = [a * t for a, t in zip(self.satt(*skips), skips)]
        mixed = [s + t for s, t in zip(spatial, skips)]
        return [a * m + s for a, m, s in zip(self.catt(*mixed), mixed, spatial)]


class UltraLightVMUNet(ScanStrategyMixin):
    """The segmentation network; ``forward`` maps (N, 3, H, W) images in [0, 255] (H, W multiples of 32) to sigmoid
    probabilities (N, num_classes, H, W)."""

    def __init__(self, num_classes: int = 1, input_channels: int = 3, c_list: Sequence[int] = SKIN_CHANNELS) -> None:
        super().__init__()
        c = list(c_list)
        self.channels = c
        self.encoder1 = nn.Sequential(nn.Conv2d(input_channels, c[0], 3, stride=1, padding=1))
        self.encoder2 = nn.Sequential(nn.Conv2d(c[0], c[1], 3, stride=1, padding=1))
        self.encoder3 = nn.Sequential(nn.Conv2d(c[1], c[2], 3, stride=1, padding=1))
        self.encoder4 = nn.Sequential(PVMLayer(c[2], c[3]))
        self.encoder5 = nn.Sequential(PVMLayer(c[3], c[4]))
        self.encoder6 = nn.Sequential(PVMLayer(c[4], c[5]))
        self.scab = SC_Att_Bridge(c)
        self.decoder1 = nn.Sequential(PVMLayer(c[5], c[4]))
        self.decoder2 = nn.Sequential(PVMLayer(c[4], c[3]))
        self.decoder3 = nn.Sequential(PVMLayer(c[3], c[2]))
        self.decoder4 = nn.Sequential(nn.Conv2d(c[2], c[1], 3, stride=1, padding=1))
        self.decoder5 = nn.Sequential(nn.Conv2d(c[1], c[0], 3, stride=1, padding=1))
        for name, ch in [("ebn1", 0), ("ebn2", 1), ("ebn3", 2), ("ebn4", 3), ("ebn5", 4),
                         ("dbn1", 4), ("dbn2", 3), ("dbn3", 2), ("dbn4", 1), ("dbn5", 0)]:  # fmt: skip
            setattr(self, name, nn.GroupNorm(4, c[ch]))
        self.final = nn.Conv2d(c[0], num_classes, kernel_size=1)
        self.apply(vm_unet_init)

    def forward(self, x: Tensor) -> Tensor:
        out = t1 = F.gelu(F.max_pool2d(self.ebn1(self.encoder1(x)), 2, 2))  # c0, H/2
        out = t2 = F.gelu(F.max_pool2d(self.ebn2(self.encoder2(out)), 2, 2))  # c1, H/4
        out = t3 = F.gelu(F.max_pool2d(self.ebn3(self.encoder3(out)), 2, 2))  # c2, H/8
        out = t4 = F.gelu(F.max_pool2d(self.ebn4(self.encoder4(out)), 2, 2))  # c3, H/16
        out = t5 = F.gelu(F.max_pool2d(self.ebn5(self.encoder5(out)), 2, 2))  # c4, H/32
        t1, t2, t3, t4, t5 = self.scab(t1, t2, t3, t4, t5)
        out = F.gelu(self.encoder6(out))  # c5, H/32
        out5 = F.gelu(self.dbn1(self.decoder1(out))) + t5
        out4 = F.gelu(up2(self.dbn2(self.decoder2(out5)))) + t4
        out3 = F.gelu(up2(self.dbn3(self.decoder3(out4)))) + t3
        out2 = F.gelu(up2(self.dbn4(self.decoder4(out3)))) + t2
        out1 = F.gelu(up2(self.dbn5(self.decoder5(out2)))) + t1
        return torch.sigmoid(up2(self.final(out1)))


register_model(
    ModelSpec(
        name="ultralight-vm-unet",
        build=UltraLightVMUNet,
        description="UltraLight VM-UNet (peer; official code MIT)",
        # encoder4 is a PVM layer (Mamba d_model 6, d_inner 12) only here; the bridge's first head is its own.
        signature=(("encoder4.0.mamba.A_log", (12, 16)), ("scab.catt.att1.weight", (8, 128))),
        unquantized_scopes=("/encoder1/", "/final/"),
        fp32_scopes=("/mamba/",),
        paper="Wu et al. 2025, Patterns, arXiv:2403.20035 (0.049M params, 0.060 GFLOPs)",
    )
)
