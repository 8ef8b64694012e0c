"""UltraLBM-UNet (Fan et al., 2025, arXiv:2512.21584), module-for-module as in the authors' code.

Six-stage encoder with channels [8, 16, 24, 32, 48, 64] (times a channel multiplier; 0.5 gives UltraLBM-UNet-T),
LMBP at stage IV and decoder III, GLMBP (one shared-weight Mamba scanning two quarter-channel branches forwards and
backwards, a depthwise-separable conv branch and an identity branch) at stages V, VI and decoders I, II.
Module names equal the authors' so their state_dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._layers import image_to_tokens, tokens_to_image, up2, vm_unet_init
from ._registry import ModelSpec, register_model
from .mamba import Mamba, ScanStrategyMixin

BASE_CHANNELS = (8, 16, 24, 32, 48, 64)


def channel_list(channel_multiplier: float = 1.0) -> list[int]:
    """The authors' channel rule: scale, then round down to a multiple of 4 (at least 4)."""
    return [max(4, (int(c * channel_multiplier) // 4) * 4) for c in BASE_CHANNELS]


class DepthwiseSeparableConvBNAct(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.dw = nn.Conv2d(in_ch, in_ch, kernel_size, padding=padding, groups=in_ch, bias=False)
        self.bn_dw = nn.BatchNorm2d(in_ch)
        self.act_dw = nn.GELU()
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(out_ch)
        self.act_pw = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_dw(self.bn_dw(self.dw(x)))
        return self.act_pw(self.bn_pw(self.pw(x)))


def _fused():
    """The adapters to the fused Triton kernels (``models._fused``); imported on first use: they import triton."""
    from . import _fused

    return _fused


def _fusable(x: Tensor) -> bool:
    """Whether the fp32 inference kernels of ``ops.triton`` may replace the PyTorch ops for ``x``."""
    if torch.is_grad_enabled() and x.requires_grad:
        return False
    return x.is_cuda and x.dtype == torch.float32 and not torch.is_autocast_enabled("cuda")


def _conv_branch(conv: DepthwiseSeparableConvBNAct, p: Tensor, hw: tuple[int, int], skip_scale: Tensor, fused: bool) -> Tensor:
    """A multi-branch block's conv branch on tokens ``p``: tokens(conv(image(p))) + skip_scale * p."""
    if fused and _fusable(p) and not any(m.training for m in conv.modules()):  # BatchNorm with running statistics
        return _fused().conv_branch(conv, p, hw, skip_scale.detach())
    return image_to_tokens(conv(tokens_to_image(p, hw))) + skip_scale * p


class LMBP(nn.Module):
    """Local multi-branch block: three depthwise-separable conv branches and one identity branch."""

    def __init__(self, input_dim: int, output_dim: int, sep_conv_kernel: int = 3) -> None:
        super().__init__()
        assert input_dim % 4 == 0, "LMBP splits channels into four quarters"
        self.input_dim, self.output_dim = input_dim, output_dim
        q = input_dim // 4
        self.norm = nn.LayerNorm(input_dim)
        self.sep_conv1 = DepthwiseSeparableConvBNAct(q, q, sep_conv_kernel)
        self.sep_conv2 = DepthwiseSeparableConvBNAct(q, q, sep_conv_kernel)
        self.sep_conv3 = DepthwiseSeparableConvBNAct(q, q, sep_conv_kernel)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))
        self.fused_kernels = False  # see UltraLBMUNet.fused_kernels

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()  # the authors upcast fp16 inputs here
        hw = (x.shape[2], x.shape[3])
        parts = torch.chunk(self.norm(image_to_tokens(x)), 4, dim=2)
        convs = (self.sep_conv1, self.sep_conv2, self.sep_conv3)
        branches = [_conv_branch(conv, p, hw, self.skip_scale, self.fused_kernels) for conv, p in zip(convs, parts)]
        branches.append(parts[3] + self.skip_scale * parts[3])
        out = self.proj(self.norm(torch.cat(branches, dim=2)))
        return tokens_to_image(out, hw)


class GLMBP(nn.Module):
    """Global-local multi-branch block with a shared-weight bidirectional Mamba on two quarter branches."""

    def __init__(
        self, input_dim: int, output_dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, sep_conv_kernel: int = 3
    ) -> None:
        super().__init__()
        assert input_dim % 4 == 0, "GLMBP splits channels into four quarters"
        self.input_dim, self.output_dim = input_dim, output_dim
        q = input_dim // 4
        self.norm = nn.LayerNorm(input_dim)
        self.mamba = Mamba(d_model=q, d_state=d_state, d_conv=d_conv, expand=expand)
        self.sep_conv = DepthwiseSeparableConvBNAct(q, q, sep_conv_kernel)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))
        self.fused_kernels = False  # see UltraLBMUNet.fused_kernels

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        hw = (x.shape[2], x.shape[3])
        x1, x2, x3, x4 = torch.chunk(self.norm(image_to_tokens(x)), 4, dim=2)
        # The four Mamba calls (two branches x forward/backward) share weights, so they run as one call
        # on a 4x batch: [x1, x2, flip(x1), flip(x2)].
        b = x1.shape[0]
        fwd = torch.cat([x1, x2], dim=0)
        y = self.mamba(torch.cat([fwd, fwd.flip(1)], dim=0))
        y = y[: 2 * b] + y[2 * b :].flip(1)
        m1 = y[:b] + self.skip_scale * x1
        m2 = y[b:] + self.skip_scale * x2
        m3 = _conv_branch(self.sep_conv, x3, hw, self.skip_scale, self.fused_kernels)
        m4 = x4 + self.skip_scale * x4
        out = self.proj(self.norm(torch.cat([m1, m2, m3, m4], dim=2)))
        return tokens_to_image(out, hw)


class UltraLBMUNet(ScanStrategyMixin):
    """The segmentation network; ``forward`` maps (N, 3, H, W) preprocessed images to sigmoid probabilities."""

    def __init__(self, num_classes: int = 1, input_channels: int = 3, channel_multiplier: float = 1.0, init_k: float = 1.0) -> None:
        super().__init__()
        c = channel_list(channel_multiplier)
        self.channels = c
        self.channel_multiplier = channel_multiplier
        self.encoder1 = nn.Sequential(nn.Conv2d(input_channels, c[0], 3, padding=1))
        self.encoder2 = nn.Sequential(nn.Conv2d(c[0], c[1], 3, padding=1))
        self.encoder3 = nn.Sequential(nn.Conv2d(c[1], c[2], 3, padding=1))
        self.encoder4 = nn.Sequential(LMBP(c[2], c[3], sep_conv_kernel=3))
        self.encoder5 = nn.Sequential(GLMBP(c[3], c[4], sep_conv_kernel=5))
        self.encoder6 = nn.Sequential(GLMBP(c[4], c[5], sep_conv_kernel=7))
        self.decoder1 = nn.Sequential(GLMBP(c[5], c[4], sep_conv_kernel=7))
        self.decoder2 = nn.Sequential(GLMBP(c[4], c[3], sep_conv_kernel=5))
        self.decoder3 = nn.Sequential(LMBP(c[3], c[2], sep_conv_kernel=3))
        self.decoder4 = nn.Sequential(nn.Conv2d(c[2], c[1], 3, padding=1))
        self.decoder5 = nn.Sequential(nn.Conv2d(c[1], c[0], 3, padding=1))
        for name, ch in [("ebn1", 0), ("ebn2", 1), ("ebn3", 2), ("ebn4", 3), ("ebn5", 4),
                         ("dbn1", 4), ("dbn2", 3), ("dbn3", 2), ("dbn4", 1), ("dbn5", 0)]:  # fmt: skip
            setattr(self, name, nn.GroupNorm(min(4, c[ch]), c[ch]))
        self.final = nn.Conv2d(c[0], num_classes, kernel_size=1)
        self.apply(vm_unet_init)  # the authors' init (UltraLight VM-UNet's), Mamba's projections included
        self.k = nn.Parameter(torch.tensor(float(init_k)))  # learnable skip scale
        self.fused_kernels = False

    @property
    def fused_kernels(self) -> bool:
        """fp32 inference on CUDA through the fused Triton kernels of ``ops.triton`` (via ``models._fused``): each
        dense 3x3 conv stage (conv), each upsampling step with the head's 1x1 conv (upsample) and each multi-branch
        block's conv branches (sepconv). Off by default, on in ``gpu.CudaGraphRunner``."""
        return self._fused_kernels

    @fused_kernels.setter
    def fused_kernels(self, value: bool) -> None:
        self._fused_kernels = value
        for m in self.modules():
            if isinstance(m, (LMBP, GLMBP)):
                m.fused_kernels = value

    def _encode(self, conv: nn.Sequential, norm: nn.GroupNorm, x: Tensor) -> Tensor:
        """Encoder stages 1-3: gelu(max_pool2(norm(conv(x))))."""
        if self.fused_kernels and _fusable(x):
            return _fused().conv_norm_pool_gelu(x, conv[0], norm)
        return F.gelu(F.max_pool2d(norm(conv(x)), 2, 2))

    def _decode(self, conv: nn.Sequential, norm: nn.GroupNorm, x: Tensor, skip: Tensor, head: nn.Conv2d | None = None) -> Tensor:
        """Decoder stages 4-5: gelu(up2(norm(conv(x)))) + k * skip, then ``head`` (a 1x1 conv) if given."""
        if self.fused_kernels and _fusable(x) and skip.dtype == x.dtype:
            fused = _fused()
            y, scale, shift = fused.conv_norm(x, conv[0], norm)
            # A one-channel head is summed inside the upsampling kernel: the full-resolution stage output
            # (8 channels) is never written.
            fuse_head = head is not None and fused.fusable_head(head, y.shape[1])
            out = fused.up2(y, "gelu_add", skip=skip, k=self.k.detach(), affine=(scale, shift), head=head if fuse_head else None)
            return head(out) if head is not None and not fuse_head else out
        out = self._up_gelu_skip(norm(conv(x)), skip)
        return head(out) if head is not None else out

    def _up_gelu_skip(self, y: Tensor, skip: Tensor) -> Tensor:
        """gelu(up2(y)) + k * skip."""
        if self.fused_kernels and _fusable(y) and skip.dtype == y.dtype:
            return _fused().up2(y, "gelu_add", skip=skip, k=self.k.detach())
        return F.gelu(up2(y)) + self.k * skip

    def _up_sigmoid(self, y: Tensor) -> Tensor:
        if self.fused_kernels and _fusable(y):
            return _fused().up2(y, "sigmoid")
        return torch.sigmoid(up2(y))

    def forward(self, x: Tensor) -> Tensor:
        out = t1 = self._encode(self.encoder1, self.ebn1, x)
        out = t2 = self._encode(self.encoder2, self.ebn2, out)
        out = t3 = self._encode(self.encoder3, self.ebn3, out)
        out = t4 = F.gelu(F.max_pool2d(self.ebn4(self.encoder4(out)), 2, 2))
        out = t5 = F.gelu(F.max_pool2d(self.ebn5(self.encoder5(out)), 2, 2))
        out = F.gelu(self.encoder6(out))
        out5 = F.gelu(self.dbn1(self.decoder1(out))) + self.k * t5
        out4 = self._up_gelu_skip(self.dbn2(self.decoder2(out5)), t4)
        out3 = self._up_gelu_skip(self.dbn3(self.decoder3(out4)), t3)
        out2 = self._decode(self.decoder4, self.dbn4, out3, t2)
        return self._up_sigmoid(self._decode(self.decoder5, self.dbn5, out2, t1, head=self.final))


def _ultralbm(name: str, channel_multiplier: float, description: str, paper: str) -> ModelSpec:
    first_width = channel_list(channel_multiplier)[0]
    return register_model(
        ModelSpec(
            name=name,
            build=lambda: UltraLBMUNet(channel_multiplier=channel_multiplier),
            description=description,
            # The first conv's width tells the two apart; the learnable skip scale k, UltraLight VM-UNet's.
            signature=(("encoder1.0.weight", (first_width, 3, 3, 3)), ("k", ())),
            unquantized_scopes=("/encoder1/", "/final/"),
            fp32_scopes=("/mamba/",),
            paper=paper,
        )
    )


_ultralbm("ultralbm", 1.0, "UltraLBM-UNet, 34,166 parameters", "Fan et al. 2025, arXiv:2512.21584 (0.034M)")
_ultralbm("ultralbm-t", 0.5, "UltraLBM-UNet-T, the 0.5x distillation student", "Fan et al. 2025, §3.6 (0.011M)")
