"""ResMamba-ULite (Nguyen et al., Multimedia Tools and Applications 2025), module-for-module as in the authors' code.

Official code: github.com/ndhieu2oo3/ResMamba-ULite (no licence file), ``module/model/remambaulite.py`` and the
files it imports. Module names equal the authors', so their state_dicts load unchanged, also from their
PyTorch-Lightning checkpoints (keys under ``state_dict``, prefixed ``model.`` by their ``Segmentor``; the
registry's ``checkpoint_filter`` removes it). Their network takes no constructor arguments: 3 -> 1 channels,
widths 16, 32 ... 512; 3,274,019 parameters (paper: 3.27M).

Structure: a 1x1 stem; five encoder blocks (ResMambaLite = depthwise 3x3 -> SplitVSS (one VMamba SS2D shared by
the four channel quarters) -> InstanceNorm -> LeakyReLU, plus a scaled residual; then a 3x3 conv-BN-ReLU, which is
the skip; then "pooling attention" downsampling); CSAM on every skip; a ConvMixer bottleneck (PCA + PSA); five
decoder blocks (nearest upsampling, an attention gate on the skip, CBAM, an axial depthwise mixer); the 1-channel
maps of every decoder stage upsampled to full size and fused from coarse to fine by one shared ``Attention_img``.

Adapted to this project's interface, and only there:

- Input: the authors feed RGB scaled to [0, 1] by ``ToTensor()`` (no mean/std). ``forward`` takes this project's
  preprocessed [0, 255] images and divides them by 255 first. Their images were not min-max stretched, so
  weights trained by them see slightly more contrast here than in training; weights trained with this toolkit
  see what they were trained on.
- Output: the authors' network returns logits (their loss and metrics apply the sigmoid); ``forward`` applies the
  sigmoid, ``forward_logits`` is their output.
- Batch coupling: their PSA applies ``nn.Softmax2d`` to a 3-D (B, H, W) tensor, which is a softmax over the
  *batch*, so an image's output depends on the other images in its batch. Their test loader uses batch 1, where
  that softmax is exactly 1. By default (``psa_softmax_over_batch=False``) every image is computed as in a batch
  of one: their evaluation, independent of the batch size. ``True`` reproduces their batched forward (they
  trained at batch 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._attention import CBAM, PCA
from ._registry import ModelSpec, register_model, strip_prefix
from ._vss import SS2D
from .mamba import ScanStrategyMixin

STEM_CHANNELS = 16
ENCODER_CHANNELS = (32, 64, 128, 256, 512)


class SplitVSS(nn.Module):
    """One SS2D (and LayerNorm) shared by the four channel quarters (channels last), each:
    x + SS2D(LN(x)) + scale * x."""

    def __init__(self, hidden_dim: int, d_state: int = 16) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim // 4, eps=1e-6)
        self.self_attention = SS2D(d_model=hidden_dim // 4, d_state=d_state)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        parts = x.chunk(4, dim=-1)
        b = x.shape[0]
        # Shared weights: the four quarters run as one call on a 4x batch.
        y = self.self_attention(self.ln_1(torch.cat(parts, dim=0)))
        return torch.cat([p + y[i * b : (i + 1) * b] + p * self.scale for i, p in enumerate(parts)], dim=-1)


class ResMambaLite(nn.Module):
    def __init__(self, in_c: int, k_size: int = 3) -> None:
        super().__init__()
        self.in_c = in_c
        self.conv = nn.Conv2d(in_c, in_c, k_size, padding=k_size // 2, groups=in_c, bias=True)  # padding="same"
        self.ins_norm = nn.InstanceNorm2d(in_c, affine=True)
        self.act = nn.LeakyReLU(negative_slope=0.01)
        self.block = SplitVSS(hidden_dim=in_c)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.act(self.ins_norm(y)) + x * self.scale


class Pooling_attention(nn.Module):  # noqa: N801 - the authors' names are their state_dict's keys
    """Halves H and W: a channel gate sigmoid(conv1d(avg pool) + conv1d(max pool)) times (avgpool2 + maxpool2)."""

    def __init__(self, channel: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=kernel_size // 2)
        self.norm = nn.Sequential(nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        gate = self.conv(x.mean(dim=(2, 3)).unsqueeze(1)) + self.conv(x.amax(dim=(2, 3)).unsqueeze(1))  # (B, 1, C)
        gate = self.norm(gate).transpose(1, 2).unsqueeze(-1)  # (B, C, 1, 1)
        if h % 2 == 0 and w % 2 == 0:  # their adaptive pools to (h//2, w//2) are plain 2x2 pools, which export
            pooled = F.avg_pool2d(x, 2) + F.max_pool2d(x, 2)
        else:  # uneven windows (sizes that are no multiple of 32); these do not export to ONNX
            pooled = F.adaptive_avg_pool2d(x, (h // 2, w // 2)) + F.adaptive_max_pool2d(x, (h // 2, w // 2))
        return gate * pooled


class EncoderBlock(nn.Module):
    """ResMambaLite, then conv-BN-ReLU to ``out_c`` (the skip), then pooling attention (the downsampled output)."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.pw = nn.Conv2d(in_c, out_c, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_c)
        self.act = nn.ReLU()
        self.mamba = ResMambaLite(in_c=in_c)
        self.pooling_att = Pooling_attention(out_c)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        skip = self.act(self.bn(self.pw(self.mamba(x))))
        return self.pooling_att(skip), skip


class CSAM(nn.Module):
    """Compact spatial attention: x * sigmoid(conv3x3(conv1x1(relu(x)))) through 4 hidden channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, 4, kernel_size=1)
        self.conv2 = nn.Conv2d(4, 1, kernel_size=3, padding=1, bias=False)
        self.sigmoid = nn.Sigmoid()
        nn.init.constant_(self.conv1.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(self.conv2(self.conv1(self.relu1(x))))


class PSA(nn.Module):
    """Priority spatial attention: a 1x1 conv, gated per pixel by sigmoid(s' (1 + softmax(s' - s))), with s and s'
    the channel means before and after the conv. Where that softmax runs: see the module docstring."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pw = nn.Conv2d(dim, dim, kernel_size=1)
        self.softmax_over_batch = False

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=1)
        x = self.pw(x)
        s_ = x.mean(dim=1)
        if self.softmax_over_batch:  # the authors' nn.Softmax2d on (B, H, W): a softmax over dim 0
            raised = torch.softmax(s_ - s, dim=0)
        else:  # what that softmax gives in a batch of one
            raised = torch.ones_like(s_)
        return x * torch.sigmoid(s_ * (1 + raised)).unsqueeze(1)


class activation_block(nn.Module):  # noqa: N801
    def __init__(self, outplane: int) -> None:
        super().__init__()
        self.gelu = nn.GELU()
        self.batchnorm = nn.BatchNorm2d(outplane)

    def forward(self, x: Tensor) -> Tensor:
        return self.batchnorm(self.gelu(x))


class ConvMixer(nn.Module):
    def __init__(self, inplane: int, outplane: int) -> None:
        super().__init__()
        self.depthwise = PCA(inplane)
        self.pointwise = PSA(outplane)
        self.activation = activation_block(outplane)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.pointwise(self.depthwise(x) + x))


class Attention_block(nn.Module):  # noqa: N801
    """Additive attention gate (Attention U-Net): skip * sigmoid(BN(psi(relu(BN(W_g g) + BN(W_x skip)))))."""

    def __init__(self, F_g: int, F_l: int, F_int: int) -> None:  # noqa: N803
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(F_g, F_int, kernel_size=1), nn.BatchNorm2d(F_int))
        self.W_x = nn.Sequential(nn.Conv2d(F_l, F_int, kernel_size=1), nn.BatchNorm2d(F_int))
        self.psi = nn.Sequential(nn.Conv2d(F_int, 1, kernel_size=1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU()

    def forward(self, g: Tensor, x: Tensor) -> Tensor:
        return x * self.psi(self.relu(self.W_g(g) + self.W_x(x)))


class AxialMixer(nn.Module):
    """x + depthwise (7, 1) conv(x) + depthwise (1, 7) conv(x)."""

    def __init__(self, dim: int, kernel: int = 7) -> None:
        super().__init__()
        self.mixer_h = nn.Conv2d(dim, dim, (kernel, 1), padding=(kernel // 2, 0), groups=dim)
        self.mixer_w = nn.Conv2d(dim, dim, (1, kernel), padding=(0, kernel // 2), groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer_h(x) + self.mixer_w(x)


class DecoderBlock(nn.Module):
    """Nearest 2x upsampling, the attention-gated skip concatenated, 1x1 conv + BN, CBAM, axial mixer, 1x1 conv to
    ``out_c`` + BN + GELU."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.att = Attention_block(in_c, in_c, in_c // 2)
        self.att2 = CBAM(in_c)
        self.pw = nn.Conv2d(in_c * 2, in_c, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(in_c)
        self.bn2 = nn.BatchNorm2d(out_c)
        self.dw = AxialMixer(in_c)
        self.act = nn.GELU()
        self.pw2 = nn.Conv2d(in_c, out_c, kernel_size=1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.bn1(self.pw(torch.cat([x, self.att(x, skip)], dim=1)))
        return self.act(self.bn2(self.pw2(self.dw(self.att2(x)))))


class MapReduce(nn.Module):
    """A 1x1 conv to one channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.constant_(self.conv.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Attention_img(nn.Module):  # noqa: N801
    """Fuses two 1-channel maps: x1 * sigmoid(relu(BN(x1 + x2))) + x2. ``conv_out`` is never called, but it is in
    the authors' state_dict, so it is kept (it never gets a gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.conv_out = nn.Conv2d(2, 1, kernel_size=1, bias=True)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return x1 * torch.sigmoid(F.relu(self.bn(x1 + x2))) + x2


class ResMambaULite(ScanStrategyMixin):
    """The segmentation network; ``forward`` maps (N, 3, H, W) images in [0, 255] (H, W multiples of 32) to sigmoid
    probabilities (N, 1, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        c = ENCODER_CHANNELS
        ins = (STEM_CHANNELS, *c[:-1])
        self.channels = list(ins) + [c[-1]]
        self.pw_in = nn.Conv2d(3, STEM_CHANNELS, kernel_size=1)
        for i in range(5):
            setattr(self, f"e{i + 1}", EncoderBlock(ins[i], c[i]))
        for i in range(5):
            setattr(self, f"c{i + 1}", CSAM(c[i]))
        self.bridge = nn.Sequential(ConvMixer(c[-1], c[-1]), nn.BatchNorm2d(c[-1]), nn.ReLU())
        for i in range(5, 0, -1):  # d5 .. d1: 512 -> 256 -> ... -> 16 (the authors' registration order)
            setattr(self, f"d{i}", DecoderBlock(c[i - 1], ins[i - 1]))
        for i, ch in enumerate(reversed(ins)):  # map1 (256 channels) .. map5 (16)
            setattr(self, f"map{i + 1}", MapReduce(ch))
        self.att = Attention_img()

    @property
    def psa_softmax_over_batch(self) -> bool:
        """The authors' batched PSA (see the module docstring); off: every image as in a batch of one."""
        return self.bridge[0].pointwise.softmax_over_batch

    @psa_softmax_over_batch.setter
    def psa_softmax_over_batch(self, value: bool) -> None:
        self.bridge[0].pointwise.softmax_over_batch = value

    def forward_logits(self, x: Tensor) -> Tensor:
        """The authors' forward (logits) on their input scale, RGB in [0, 1]."""
        size = (x.shape[2], x.shape[3])
        x = self.pw_in(x)
        skips = []
        for i in range(1, 6):
            x, skip = getattr(self, f"e{i}")(x)
            skips.append(getattr(self, f"c{i}")(skip))
        x = self.bridge(x)
        maps = []
        for i in range(5, 0, -1):
            x = getattr(self, f"d{i}")(x, skips[i - 1])
            maps.append(F.interpolate(getattr(self, f"map{6 - i}")(x), size, mode="bilinear", align_corners=False))
        # Coarse-to-fine fusion with the shared Attention_img: x4 <- (x4, x5), x3 <- (x3, x4), ...
        out = maps[4]
        for m in reversed(maps[:4]):
            out = self.att(m, out)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.forward_logits(x / 255.0))


register_model(
    ModelSpec(
        name="resmamba-ulite",
        build=ResMambaULite,
        description="ResMamba-ULite (peer; official code without licence)",
        # The 1x1 stem is DermoMamba's too; the never-called Attention_img.conv_out is ResMamba-ULite's alone.
        signature=(("pw_in.weight", (16, 3, 1, 1)), ("att.conv_out.weight", (1, 2, 1, 1))),
        unquantized_scopes=("/pw_in/", "/map1/", "/map2/", "/map3/", "/map4/", "/map5/"),
        fp32_scopes=("/self_attention/",),  # the SS2Ds (the encoder attribute "mamba" is a whole ResMambaLite)
        checkpoint_filter=strip_prefix("model."),  # their Lightning Segmentor's attribute
        lowered_scan=False,
        paper="Nguyen et al. 2025, Multimedia Tools and Applications (3.27M params, 1.52 GFLOPs)",
    )
)
