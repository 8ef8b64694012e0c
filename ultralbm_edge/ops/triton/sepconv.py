"""The LMBP/GLMBP conv branch in one Triton kernel: tokens in, tokens out.

Each conv branch of the multi-branch blocks is ``tokens(gelu(bn(pw(gelu(bn(dw(image(x)))))))) + s * x`` on a
quarter of the channels (3 to 16 of them). In PyTorch that is a layout copy, a depthwise conv, a BatchNorm+GELU,
a 1x1 conv, a BatchNorm+GELU, a transpose and the skip add: seven or more launches of a few microseconds each on
tensors of a few kilobytes, which made up a fifth of the network's time at batch 1 on an H100
(benchmarks/results/gpu_h100.md). Here each program reads a tile of pixels in the token layout (channels
contiguous) with all their channels, runs the KxK depthwise taps, the BatchNorm (inference statistics) and GELU,
the 1x1 conv as one small fp32 dot, the second BatchNorm and GELU and the skip, and writes tokens again.
Inference only (BatchNorm with running statistics), fp32 only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import check_fp32_input, gelu

# tl.dot needs every dimension >= 16: channels are padded to 16 (padding weights are zero).
_MIN_CHANNELS = 16
_MAX_BLOCK = 64
# Fewer programs than this leave the H100's 132 SMs idle; small batches get smaller pixel tiles.
_MIN_PROGRAMS = 132


@triton.jit
def _bn_gelu(v, mean_ptr, var_ptr, gamma_ptr, beta_ptr, eps, c, mask_c):
    """Inference BatchNorm, in PyTorch's order ((v - mean) * rsqrt(var + eps) * gamma + beta), then exact GELU."""
    mean = tl.load(mean_ptr + c, mask=mask_c, other=0.0)
    invstd = 1.0 / tl.sqrt(tl.load(var_ptr + c, mask=mask_c, other=1.0) + eps)
    gamma = tl.load(gamma_ptr + c, mask=mask_c, other=0.0)
    beta = tl.load(beta_ptr + c, mask=mask_c, other=0.0)
    v = (v - mean[None, :]) * invstd[None, :] * gamma[None, :] + beta[None, :]
    return gelu(v)


@triton.jit
def _sep_conv_kernel(x_ptr, s_xn, s_xl, dw_ptr, pw_ptr, m1_ptr, v1_ptr, g1_ptr, b1_ptr, eps1,
                     m2_ptr, v2_ptr, g2_ptr, b2_ptr, eps2, skip_ptr, out_ptr,
                     H: tl.constexpr, W: tl.constexpr, Q: tl.constexpr, QP: tl.constexpr, K: tl.constexpr,
                     BLOCK: tl.constexpr):  # fmt: skip
    # Scalars in fp32 whatever the caller passed (Inductor passes Python floats as fp64, which would turn the
    # whole computation into fp64).
    eps1 = tl.cast(eps1, tl.float32)
    eps2 = tl.cast(eps2, tl.float32)
    n = tl.program_id(0).to(tl.int64)
    pix = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = pix < H * W
    hh = pix // W
    ww = pix % W
    c = tl.arange(0, QP)
    mask_c = c < Q
    x_img = x_ptr + n * s_xn + c[None, :]

    acc = tl.zeros((BLOCK, QP), dtype=tl.float32)
    for tap in tl.static_range(K * K):
        dy = tap // K - K // 2
        dx = tap % K - K // 2
        inside = valid & ((hh + dy).to(tl.uint32) < H) & ((ww + dx).to(tl.uint32) < W)
        v = tl.load(x_img + (pix + dy * W + dx)[:, None] * s_xl, mask=inside[:, None] & mask_c[None, :], other=0.0)
        acc += v * tl.load(dw_ptr + c * (K * K) + tap, mask=mask_c, other=0.0)[None, :]
        if tap == (K * K) // 2:
            centre = v  # the branch's own input, for the skip
    t = _bn_gelu(acc, m1_ptr, v1_ptr, g1_ptr, b1_ptr, eps1, c, mask_c)
    # 1x1 conv: (pixels x in) @ (in x out), weights stored (out, in).
    w_t = tl.load(pw_ptr + c[None, :] * Q + c[:, None], mask=mask_c[:, None] & mask_c[None, :], other=0.0)
    y = _bn_gelu(tl.dot(t, w_t, input_precision="ieee"), m2_ptr, v2_ptr, g2_ptr, b2_ptr, eps2, c, mask_c)
    y += tl.load(skip_ptr) * centre
    tl.store(out_ptr + n * (H * W * Q) + pix[:, None] * Q + c[None, :], y, mask=valid[:, None] & mask_c[None, :])


class BatchNormParams(NamedTuple):
    """An inference BatchNorm as tensors: running ``mean`` and ``var``, affine ``weight`` and ``bias``, ``eps``."""

    mean: Tensor
    var: Tensor
    weight: Tensor
    bias: Tensor
    eps: float


def sep_conv_tokens(
    x: Tensor,
    hw: tuple[int, int],
    dw_weight: Tensor,
    bn_dw: BatchNormParams,
    pw_weight: Tensor,
    bn_pw: BatchNormParams,
    skip_scale: Tensor,
) -> Tensor:
    """``tokens(gelu(bn_pw(pw(gelu(bn_dw(dw(image(x)))))))) + skip_scale * x`` for tokens ``x`` (N, H*W, Q) (any
    strides with contiguous channels, e.g. a channel slice of a larger token tensor): ``dw_weight`` (Q, 1, K, K) is a
    depthwise KxK conv (K odd, 'same' padding, no bias), ``pw_weight`` (Q, Q, 1, 1) a 1x1 conv without bias, GELU
    exact; returns contiguous (N, H*W, Q) tokens."""
    check_fp32_input(x, "sep_conv_tokens")
    n, length, q = x.shape
    h, w = hw
    k = dw_weight.shape[-1]
    if tuple(dw_weight.shape) != (q, 1, k, k) or k % 2 == 0:
        raise ValueError(f"sep_conv_tokens implements an odd KxK depthwise conv over {q} channels, got weights {tuple(dw_weight.shape)}")
    if tuple(pw_weight.shape) != (q, q, 1, 1):
        raise ValueError(f"sep_conv_tokens implements a square 1x1 conv over {q} channels, got weights {tuple(pw_weight.shape)}")
    if length != h * w:
        raise ValueError(f"{length} tokens do not form a {h}x{w} image")
    if x.stride(2) != 1:
        x = x.contiguous()
    block = min(_MAX_BLOCK, max(16, triton.next_power_of_2(length)))
    while block > 16 and n * triton.cdiv(length, block) < _MIN_PROGRAMS:
        block //= 2
    out = torch.empty((n, length, q), device=x.device, dtype=x.dtype)
    _sep_conv_kernel[(n, triton.cdiv(length, block))](
        x, x.stride(0), x.stride(1), dw_weight, pw_weight,
        bn_dw.mean, bn_dw.var, bn_dw.weight, bn_dw.bias, bn_dw.eps,
        bn_pw.mean, bn_pw.var, bn_pw.weight, bn_pw.bias, bn_pw.eps, skip_scale, out,
        H=h, W=w, Q=q, QP=max(_MIN_CHANNELS, triton.next_power_of_2(q)), K=k, BLOCK=block,
    )  # fmt: skip
    return out
