"""DermoMamba (Hoang et al., Pattern Analysis and Applications 28:128, 2025), module-for-module as in the authors'
code.

Official code: github.com/hnkhai25/DermoMamba (no licence file), ``module/model/proposed_net.py`` and the files it
imports. Module names equal the authors', so their state_dicts load unchanged, also from their PyTorch-Lightning
checkpoints (keys under ``state_dict``, prefixed ``model.``; the registry's ``checkpoint_filter`` removes it).
Their network takes no constructor arguments: 3 -> 1 channels, widths 16, 32 ... 512; 4,953,425 parameters (paper:
"fewer than 5 million"). The published code does not run as it is (``module/VSSBlock.py`` uses ``F`` without
importing it, among other breaks listed in the model card), so the paper's numbers cannot come from it verbatim.

Structure: a 1x1 stem; five encoder blocks (a Cross-Scale Mamba Block: the first three channel quarters each go
through an axial depthwise mixer of dilation 1, 2, 3 and one shared VSSBlock, the fourth passes, then BN-ReLU;
then a 3x3 conv + InstanceNorm + LeakyReLU with a scaled residual; a 3x3 conv-BN-ReLU, which is the skip; a 2x2
max pool); CBAM on every skip; a bottleneck of PCA (+ residual) then "Sweep Mamba" (three SS2Ds scanning the
(H, W), (W, C) and (C, H) planes of a channel-reduced tensor); five plain decoder blocks (nearest 2x, concat, 1x1,
3x3, GELU, BN); a 1x1 head.

Adapted to this project's interface, and only there:

- Input size. Sweep Mamba's second and third SS2D take the bottleneck's *height* and *width* as their channel
  count (``SS2D(d_model=6)``, ``SS2D(d_model=8)``), so the authors' network runs only on inputs with H // 32 == 6
  and W // 32 == 8: their ISIC 2018 arrays of 192x256 (H x W). ``forward`` therefore resizes any other input
  bilinearly to 192x256 and the logits back to the input's size. On a 192x256 input it is the authors' network.
- Input scale: the authors feed RGB scaled to [0, 1] by ``ToTensor()`` (no mean/std); ``forward`` takes this
  project's preprocessed [0, 255] images and divides them by 255 first (see ``resmamba_ulite`` for what the
  min-max stretch means for their weights).
- Output: the authors' network returns logits; ``forward`` applies the sigmoid, ``forward_logits`` is theirs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._attention import CBAM, PCA
from ._registry import ModelSpec, register_model, strip_prefix
from ._vss import SS2D, VSSBlock
from .mamba import ScanStrategyMixin

STEM_CHANNELS = 16
ENCODER_CHANNELS = (32, 64, 128, 256, 512)
NATIVE_SIZE = (192, 256)  # (H, W) of the authors' training arrays: the only size their bottleneck accepts
DOWNSAMPLING = 32


class Axial_Spatial_DW(nn.Module):  # noqa: N801 - the authors' names are their state_dict's keys
    """x + dw3x3(dw(7,1)(dw(1,7)(x))), all depthwise with one dilation."""

    def __init__(self, dim: int, dilation: int = 1, kernel: int = 7) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2  # padding="same"
        self.mixer_h = nn.Conv2d(dim, dim, (kernel, 1), padding=(pad, 0), groups=dim, dilation=dilation)
        self.mixer_w = nn.Conv2d(dim, dim, (1, kernel), padding=(0, pad), groups=dim, dilation=dilation)
        self.conv = nn.Conv2d(dim, dim, 3, padding=dilation, groups=dim, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.mixer_h(self.mixer_w(x))) + x


class Cross_Scale_Mamba_Block(nn.Module):  # noqa: N801
    def __init__(self, dim: int) -> None:
        super().__init__()
        q = dim // 4
        self.dw1 = Axial_Spatial_DW(q, dilation=1)
        self.dw2 = Axial_Spatial_DW(q, dilation=2)
        self.dw3 = Axial_Spatial_DW(q, dilation=3)
        self.vss = VSSBlock(q)
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
        b = x.shape[0]
        # The shared VSSBlock runs the three mixed quarters as one call on a 3x batch (channels last).
        mixed = torch.cat([self.dw1(x1), self.dw2(x2), self.dw3(x3)], dim=0)
        y = self.vss(mixed.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.act(self.bn(torch.cat([y[:b], y[b : 2 * b], y[2 * b :], x4], dim=1)))


class ResMambaBlock(nn.Module):
    def __init__(self, in_c: int) -> None:
        super().__init__()
        self.ins_norm = nn.InstanceNorm2d(in_c, affine=True)
        self.act = nn.LeakyReLU(negative_slope=0.01)
        self.block = Cross_Scale_Mamba_Block(in_c)
        self.conv = nn.Conv2d(in_c, in_c, kernel_size=3, padding=1)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(x)
        return self.act(self.ins_norm(self.conv(x))) + x * self.scale


class EncoderBlock(nn.Module):
    """ResMambaBlock, a 3x3 conv-BN-ReLU to ``out_c`` (the skip), a 2x2 max pool (the output)."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.pw = nn.Conv2d(in_c, out_c, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_c)
        self.act = nn.ReLU()
        self.resmamba = ResMambaBlock(in_c)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        skip = self.act(self.bn(self.pw(self.resmamba(x))))
        return F.max_pool2d(skip, 2), skip


class Sweep_Mamba(nn.Module):  # noqa: N801
    """LayerNorm -> linear to dim/ratio -> three SS2Ds over the (H, W), (W, C) and (C, H) planes, each gated by SiLU
    of their common input, summed -> linear back -> + scale * input -> BN -> ReLU. ``bottleneck_hw`` is the
    bottleneck's (H, W): the channel counts of the second and third SS2D."""

    def __init__(self, dim: int, bottleneck_hw: tuple[int, int], ratio: int = 8) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, dim // ratio)
        self.mamba1 = SS2D(d_model=dim // ratio, d_state=16)
        self.mamba2 = SS2D(d_model=bottleneck_hw[0], d_state=16)
        self.mamba3 = SS2D(d_model=bottleneck_hw[1], d_state=16)
        self.proj_out = nn.Linear(dim // ratio, dim)
        self.scale = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        skip = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.proj_in(self.ln(skip))
        x1 = self.mamba1(x)  # plane (H, W), channels C
        x2 = self.mamba2(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # plane (W, C), channels H
        x3 = self.mamba3(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # plane (C, H), channels W
        w = F.silu(x)
        out = self.proj_out(w * x1 + w * x2 + w * x3) + skip * self.scale
        return F.relu(self.bn(out.permute(0, 3, 1, 2)))


class DecoderBlock(nn.Module):
    """Nearest 2x upsampling, concat with the skip, 1x1 conv, 3x3 conv to ``out_c``, GELU, BN."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.pw = nn.Conv2d(in_c * 2, in_c, kernel_size=1)
        self.bn = nn.BatchNorm2d(out_c)
        self.act = nn.GELU()
        self.pw2 = nn.Conv2d(in_c, out_c, kernel_size=3, padding=1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.bn(self.act(self.pw2(self.pw(torch.cat([x, skip], dim=1)))))


class DermoMamba(ScanStrategyMixin):
    """The segmentation network; ``forward`` maps (N, 3, H, W) images in [0, 255] to sigmoid probabilities
    (N, 1, H, W), through the authors' network at 192x256 (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        c = ENCODER_CHANNELS
        ins = (STEM_CHANNELS, *c[:-1])
        self.channels = list(ins) + [c[-1]]
        self.pw_in = nn.Conv2d(3, STEM_CHANNELS, kernel_size=1)
        for i in range(5):
            setattr(self, f"e{i + 1}", EncoderBlock(ins[i], c[i]))
        for i in range(5):
            setattr(self, f"s{i + 1}", CBAM(c[i]))
        self.b1 = Sweep_Mamba(c[-1], bottleneck_hw=(NATIVE_SIZE[0] // DOWNSAMPLING, NATIVE_SIZE[1] // DOWNSAMPLING))
        self.b2 = PCA(c[-1])
        for i in range(5, 0, -1):  # d5 .. d1: 512 -> 256 -> ... -> 16 (the authors' registration order)
            setattr(self, f"d{i}", DecoderBlock(c[i - 1], ins[i - 1]))
        self.conv_out = nn.Conv2d(STEM_CHANNELS, 1, kernel_size=1)

    def forward_logits(self, x: Tensor) -> Tensor:
        """The authors' forward (logits) on their input: (N, 3, 192, 256) RGB in [0, 1]."""
        x = self.pw_in(x)
        skips = []
        for i in range(1, 6):
            x, skip = getattr(self, f"e{i}")(x)
            skips.append(getattr(self, f"s{i}")(skip))
        x = self.b1(self.b2(x) + x)
        for i in range(5, 0, -1):
            x = getattr(self, f"d{i}")(x, skips[i - 1])
        return self.conv_out(x)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[2], x.shape[3])
        x = x / 255.0
        if size == NATIVE_SIZE:
            return torch.sigmoid(self.forward_logits(x))
        # Our adaptation: to the one size the authors' network accepts and back (bilinear, no antialiasing, so that
        # it exports at opset 17).
        x = F.interpolate(x, NATIVE_SIZE, mode="bilinear", align_corners=False)
        return torch.sigmoid(F.interpolate(self.forward_logits(x), size, mode="bilinear", align_corners=False))


register_model(
    ModelSpec(
        name="dermomamba",
        build=DermoMamba,
        description="DermoMamba (peer; official code without licence), runs at 192x256 inside",
        # The 1x1 stem is ResMamba-ULite's too; an SS2D of 6 channels (the bottleneck's height) is DermoMamba's.
        signature=(("pw_in.weight", (16, 3, 1, 1)), ("b1.mamba2.A_logs", (48, 16))),
        unquantized_scopes=("/pw_in/", "/conv_out/"),
        fp32_scopes=("/self_attention/", "/mamba1/", "/mamba2/", "/mamba3/"),  # the SS2Ds
        checkpoint_filter=strip_prefix("model."),  # their Lightning Segmentor's attribute
        lowered_scan=False,
        paper="Hoang et al. 2025, Pattern Analysis and Applications 28:128 (< 5M params, < 1 GFLOPs)",
    )
)
