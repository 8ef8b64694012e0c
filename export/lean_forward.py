"""An export-only forward of UltraLBM-UNet, mathematically the same network, laid out for graph runtimes.

``LeanUltraLBM(model)`` wraps a loaded :class:`~ultralbm_edge.models.UltraLBMUNet` (its parameters are read, never
changed, so checkpoints and module names stay as they are) and computes the same function with fewer, larger and
cheaper operators once traced to ONNX:

- NCHW end to end: no token <-> image Reshape/Transpose round trips except around the channel LayerNorms;
- the three conv branches of an LMBP run as one depthwise conv + one grouped (groups=3) pointwise conv, BatchNorm
  folded, and every multi-branch block's ``cat(branches) + skip_scale * x`` is one Concat, one Mul, one Add;
- a GLMBP's four Mamba calls (two branches, forwards and flipped) are one grouped causal Conv1d that computes
  in_proj and conv1d together (and z), one MatMul that computes x_proj and dt_proj together, one scan node over the
  4x batch and one block-diagonal MatMul for both branches' out_proj (linear, so applied after the fwd/bwd sum);
- GroupNorm followed by max-pooling (encoder stages) applies its per-channel affine after the pooling, on a tensor
  4x smaller (exact where every gamma >= 0: the affine is then non-decreasing and commutes with max; else that stage
  keeps the reference order);
- the 1x1 head is a channel reduction (MatMul), not an 8->1 Conv that graph runtimes pad to a channel block.

Rounding differs from the reference (sums in another order); the export's parity check is the gate. 481 instead of
856 nodes for the bundled model; ONNX Runtime CPU, one thread: the default export 1.27x (batch 1) / 1.37x (batch 8)
5d27715's, of which this graph ~1.1-1.3x (``benchmarks/default_speed.py``, README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ultralbm_edge.models._layers import up2
from ultralbm_edge.models.mamba import Mamba
from ultralbm_edge.models.ultralbm_unet import GLMBP, LMBP, DepthwiseSeparableConvBNAct, UltraLBMUNet
from ultralbm_edge.ops import selective_scan


@dataclass(frozen=True)
class LeanOptions:
    """Which rewrites to apply (each can be switched off to measure what it is worth)."""

    blocks: bool = True  # lean LMBP / GLMBP
    pool_affine: bool = True  # GroupNorm + max-pool: normalise, pool, then the affine (where every gamma >= 0)
    head: bool = True  # 1x1 head as a channel reduction (MatMul)


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    b = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        b = b + conv.bias * scale
    return w.detach().clone(), b.detach().clone()


def _static_sizes(x: Tensor) -> tuple[int, int]:
    """Height and width as Python ints: traced as constants (the export's image size is fixed), so that ONNX keeps
    every dimension but the batch known through the reshapes."""
    return int(x.shape[2]), int(x.shape[3])


def _ln_channels(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm over the channel axis of an NCHW / NCL tensor."""
    if x.dim() == 4:
        return F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps).permute(0, 3, 1, 2)
    return F.layer_norm(x.transpose(1, 2), norm.normalized_shape, norm.weight, norm.bias, norm.eps).transpose(1, 2)


class _SepConvs(nn.Module):
    """k depthwise-separable conv branches over k adjacent channel groups, as two convs (BN folded)."""

    def __init__(self, convs: list[DepthwiseSeparableConvBNAct]) -> None:
        super().__init__()
        dws, dbs, pws, pbs = [], [], [], []
        for c in convs:
            w, b = _fold_bn(c.dw, c.bn_dw)
            dws.append(w)
            dbs.append(b)
            w, b = _fold_bn(c.pw, c.bn_pw)
            pws.append(w)
            pbs.append(b)
        self.register_buffer("dw_w", torch.cat(dws))
        self.register_buffer("dw_b", torch.cat(dbs))
        self.register_buffer("pw_w", torch.cat(pws))
        self.register_buffer("pw_b", torch.cat(pbs))
        self.groups = len(convs)
        self.padding = (convs[0].dw.kernel_size[0] - 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(F.conv2d(x, self.dw_w, self.dw_b, padding=self.padding, groups=x.shape[1]))
        return F.gelu(F.conv2d(x, self.pw_w, self.pw_b, groups=self.groups))


class LeanLMBP(nn.Module):
    """An LMBP in NCHW: its three conv branches as one ``_SepConvs``, one Concat, Mul and Add for the skips."""

    def __init__(self, block: LMBP) -> None:
        super().__init__()
        self.norm = block.norm
        self.q = block.input_dim // 4
        self.convs = _SepConvs([block.sep_conv1, block.sep_conv2, block.sep_conv3])
        self.register_buffer("proj_w", block.proj.weight.detach().clone())
        self.register_buffer("proj_b", block.proj.bias.detach().clone())
        self.skip = block.skip_scale

    def forward(self, x: Tensor) -> Tensor:
        p = _ln_channels(x, self.norm)
        p123, p4 = torch.split(p, [3 * self.q, self.q], dim=1)
        m = torch.cat([self.convs(p123), p4], dim=1) + self.skip * p
        t = F.layer_norm(m.permute(0, 2, 3, 1), self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        return F.linear(t, self.proj_w, self.proj_b).permute(0, 3, 1, 2)


class LeanMamba(nn.Module):
    """The four calls of a GLMBP's shared Mamba on channel-major [N, 2q, L] input (branches x1, x2)."""

    def __init__(self, mamba: Mamba) -> None:
        super().__init__()
        di, q, n, r = mamba.d_inner, mamba.d_model, mamba.d_state, mamba.dt_rank
        k = mamba.d_conv
        self.di, self.q, self.n, self.k = di, q, n, k
        w_in = mamba.in_proj.weight.detach()  # [2di, q]
        w_x, w_z = w_in[:di], w_in[di:]
        cw = mamba.conv1d.weight.detach()[:, 0, :]  # [di, k]
        # One group per sequence: out[:di] = conv1d(in_proj_x(x)) (k causal taps), out[di:] = in_proj_z(x) (last tap).
        w = torch.zeros(2 * di, q, k)
        w[:di] = cw[:, None, :] * w_x[:, :, None]
        w[di:, :, k - 1] = w_z
        b = torch.cat([mamba.conv1d.bias.detach(), torch.zeros(di)])
        self.register_buffer("conv_w", w.repeat(4, 1, 1))
        self.register_buffer("conv_b", b.repeat(4))
        # x_proj's dt rows composed with dt_proj (bias added inside the scan), then B and C rows.
        xw = mamba.x_proj.weight.detach()  # [r + 2n, di]
        self.register_buffer("xdbl_w", torch.cat([mamba.dt_proj.weight.detach() @ xw[:r], xw[r:]]))
        self.register_buffer("A", -torch.exp(mamba.A_log.detach().float()))
        self.register_buffer("D", mamba.D.detach().float().clone())
        self.register_buffer("dt_bias", mamba.dt_proj.bias.detach().float().clone())
        wo = mamba.out_proj.weight.detach()  # [q, di]
        self.register_buffer("out_w", torch.block_diag(wo, wo))  # [2q, 2di]
        self.source = mamba  # whose scan strategy the export sets (``using_scan``)

    def forward(self, xq: Tensor) -> Tensor:
        length = int(xq.shape[2])  # a constant in the trace, like every size but the batch (see _static_sizes)
        di, n = self.di, self.n
        seqs = torch.cat([xq, xq.flip(2)], dim=1)  # [N, 4q, L]: x1, x2, flip(x1), flip(x2)
        xz = F.conv1d(F.pad(seqs, (self.k - 1, 0)), self.conv_w, self.conv_b, groups=4)  # [N, 4*2di, L]
        xz = xz.reshape(-1, 2 * di, length)
        xr, z = torch.split(xz, [di, di], dim=1)
        u = F.silu(xr)
        dbc = torch.matmul(self.xdbl_w, u)  # [4N, di + 2n, L]
        dt, bm, cm = torch.split(dbc, [di, n, n], dim=1)
        y = selective_scan(u, dt, self.A, bm, cm, self.D, z=z, delta_bias=self.dt_bias, delta_softplus=True,
                           strategy=self.source.scan_strategy)  # [4N, di, L]
        yf, yb = torch.split(y.reshape(-1, 4 * di, length), [2 * di, 2 * di], dim=1)
        y = yf + yb.flip(2)  # [N, 2di, L]
        return torch.matmul(self.out_w, y)  # [N, 2q, L]


class LeanGLMBP(nn.Module):
    """A GLMBP in NCHW: both Mamba branches through one ``LeanMamba``, one Concat, Mul and Add for the skips."""

    def __init__(self, block: GLMBP) -> None:
        super().__init__()
        self.norm = block.norm
        self.q = block.input_dim // 4
        self.mamba = LeanMamba(block.mamba)
        self.convs = _SepConvs([block.sep_conv])
        self.register_buffer("proj_w", block.proj.weight.detach().clone())
        self.register_buffer("proj_b", block.proj.bias.detach().clone())
        self.skip = block.skip_scale

    def forward(self, x: Tensor) -> Tensor:
        h, w = _static_sizes(x)
        p = _ln_channels(x, self.norm)
        p12, p3, p4 = torch.split(p, [2 * self.q, self.q, self.q], dim=1)
        m12 = self.mamba(p12.flatten(2)).reshape(-1, 2 * self.q, h, w)
        m = torch.cat([m12, self.convs(p3), p4], dim=1) + self.skip * p
        t = F.layer_norm(m.permute(0, 2, 3, 1), self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        return F.linear(t, self.proj_w, self.proj_b).permute(0, 3, 1, 2)


class NormPoolAffine(nn.Module):
    """max_pool2(group_norm(y)) as group_norm_without_affine(y) -> max_pool2 -> affine: the per-channel Mul/Add
    run on the pooled (4x smaller) tensor. Exact when every gamma >= 0 (the affine is then non-decreasing and
    commutes with max); ``applies`` says whether it does (else the caller keeps the reference order)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm
        self.applies = bool((norm.weight.detach() >= 0).all())

    def forward(self, y: Tensor) -> Tensor:
        n = self.norm
        if not self.applies:  # the reference order
            return F.max_pool2d(n(y), 2, 2)
        p = F.max_pool2d(F.group_norm(y, n.num_groups, eps=n.eps), 2, 2)
        return p * n.weight.reshape(1, -1, 1, 1) + n.bias.reshape(1, -1, 1, 1)


class LeanUltraLBM(nn.Module):
    """UltraLBM-UNet's forward for export (see the module docstring); ``opts`` switches each rewrite."""

    def __init__(self, model: UltraLBMUNet, opts: LeanOptions = LeanOptions()) -> None:
        super().__init__()
        self.m, self.opts = model, opts
        norms = (model.ebn1, model.ebn2, model.ebn3, model.ebn4, model.ebn5)
        self.pools = nn.ModuleList(NormPoolAffine(n) if opts.pool_affine else _NormPool(n) for n in norms)
        blocks = ("encoder4", "encoder5", "encoder6", "decoder1", "decoder2", "decoder3")
        self.blk = nn.ModuleDict({name: _lean_block(getattr(model, name)[0]) if opts.blocks else getattr(model, name) for name in blocks})
        # Named "final" as the model's head: its ONNX nodes keep the scope that quantization leaves in fp32.
        self.final = _ReductionHead(model.final) if opts.head else None

    def forward(self, x: Tensor) -> Tensor:
        m, blk, pools = self.m, self.blk, self.pools
        t1 = F.gelu(pools[0](m.encoder1(x)))
        t2 = F.gelu(pools[1](m.encoder2(t1)))
        t3 = F.gelu(pools[2](m.encoder3(t2)))
        t4 = F.gelu(pools[3](blk["encoder4"](t3)))
        t5 = F.gelu(pools[4](blk["encoder5"](t4)))
        out = F.gelu(blk["encoder6"](t5))
        out5 = F.gelu(m.dbn1(blk["decoder1"](out))) + m.k * t5
        out4 = F.gelu(up2(m.dbn2(blk["decoder2"](out5)))) + m.k * t4
        out3 = F.gelu(up2(m.dbn3(blk["decoder3"](out4)))) + m.k * t3
        out2 = F.gelu(up2(m.dbn4(m.decoder4(out3)))) + m.k * t2
        g = F.gelu(up2(m.dbn5(m.decoder5(out2))))
        # The skip is added before the head, as in the model: INT8 calibration keeps the head ("/final/") and the
        # tensor only it reads in fp32.
        z = (self.final if self.final is not None else m.final)(g + m.k * t1)
        return torch.sigmoid(up2(z))


def _lean_block(block: nn.Module) -> nn.Module:
    return LeanLMBP(block) if isinstance(block, LMBP) else LeanGLMBP(block)


class _NormPool(nn.Module):
    """max_pool2(norm(y)), the reference order."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, y: Tensor) -> Tensor:
        return F.max_pool2d(self.norm(y), 2, 2)


class _ReductionHead(nn.Module):
    """A 1x1 conv to one channel as a channel reduction (MatMul) and a bias."""

    def __init__(self, final: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("w", final.weight.detach().reshape(1, -1).clone())
        self.register_buffer("b", final.bias.detach().reshape(1, 1, 1, 1).clone())

    def forward(self, x: Tensor) -> Tensor:
        h, w = _static_sizes(x)
        return torch.matmul(self.w, x.flatten(2)).reshape(-1, 1, h, w) + self.b
