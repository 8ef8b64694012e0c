"""Bilinear x2 upsampling (align_corners=True) fused with what the decoder does next, in one Triton kernel.

UltraLBM-UNet's decoder ends every stage with ``gelu(up2(y)) + k * skip`` and the head with ``sigmoid(up2(y))``.
Eagerly that is four kernels over full-resolution tensors, and PyTorch's NCHW bilinear kernel alone took 5.5 of
17 ms at batch 256 on an H100 (benchmarks/results/gpu_h100.md). Here each output pixel is computed once: four
gathers, the bilinear weights exactly as PyTorch's CUDA kernel forms them (fp32 source index = scale * dst, with
scale = (in - 1) / (out - 1)), then the epilogue. The last decoder stage also takes the network's 1x1 head
(8 -> 1 channels) into the same kernel, so its 8-channel 128x128 output is never written (the head's cuDNN
convolution alone, with its layout copies, took 0.25 ms of the compiled network's 5.5 ms at batch 256).
Inference only (no backward); fp32 only.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import check_fp32_input, gelu

EPILOGUES = {"none": 0, "gelu_add": 1, "sigmoid": 2}
_BLOCK = 1024


@triton.jit
def _up2_kernel(x_ptr, skip_ptr, k_ptr, a_ptr, b_ptr, head_w_ptr, head_b_ptr, out_ptr, H, W, scale_h, scale_w,
                EPILOGUE: tl.constexpr, AFFINE: tl.constexpr, HEAD: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    # One program: a tile of output pixels of one plane, or with a head (HEAD = its input channels) of all
    # HEAD planes of one image, summed through the head's 1x1 weights into one output plane.
    scale_h = tl.cast(scale_h, tl.float32)  # Inductor passes Python floats as fp64; PyTorch's kernel works in fp32
    scale_w = tl.cast(scale_w, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    Wo = 2 * W
    n_out = 4 * H * W
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_out
    i = offs // Wo
    j = offs % Wo
    src_h = scale_h * i.to(tl.float32)
    src_w = scale_w * j.to(tl.float32)
    h0 = src_h.to(tl.int32)  # floor: source indices are >= 0
    w0 = src_w.to(tl.int32)
    dh = tl.where(h0 < H - 1, W, 0)
    dw = tl.where(w0 < W - 1, 1, 0)
    lh = src_h - h0.to(tl.float32)
    lw = src_w - w0.to(tl.float32)
    src = h0 * W + w0
    if EPILOGUE == 1:
        k = tl.load(k_ptr)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for ci in tl.static_range(HEAD if HEAD > 0 else 1):
        plane = pid * HEAD + ci if HEAD > 0 else pid
        base = x_ptr + plane * H * W + src
        v00 = tl.load(base, mask=mask, other=0.0)
        v01 = tl.load(base + dw, mask=mask, other=0.0)
        v10 = tl.load(base + dh, mask=mask, other=0.0)
        v11 = tl.load(base + dh + dw, mask=mask, other=0.0)
        v = (1.0 - lh) * ((1.0 - lw) * v00 + lw * v01) + lh * ((1.0 - lw) * v10 + lw * v11)
        if AFFINE:  # a per-plane affine (a GroupNorm's), applied after interpolating: the weights sum to one
            v = v * tl.load(a_ptr + plane) + tl.load(b_ptr + plane)
        if EPILOGUE == 1:  # exact (erf) GELU, then the scaled skip connection
            skip = tl.load(skip_ptr + plane * n_out + offs, mask=mask, other=0.0)
            v = gelu(v) + k * skip
        elif EPILOGUE == 2:
            v = tl.sigmoid(v)
        if HEAD > 0:
            acc += v * tl.load(head_w_ptr + ci)
        else:
            tl.store(out_ptr + plane * n_out + offs, v, mask=mask)
    if HEAD > 0:
        tl.store(out_ptr + pid * n_out + offs, acc + tl.load(head_b_ptr), mask=mask)


def up2_fused(
    x: Tensor,
    epilogue: str = "none",
    skip: Optional[Tensor] = None,
    k: Optional[Tensor] = None,
    affine: Optional[tuple[Tensor, Tensor]] = None,
    head: Optional[tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """``epilogue(interpolate(x * scale + shift, scale_factor=2, mode="bilinear", align_corners=True))`` on a
    CUDA fp32 NCHW tensor; ``gelu_add`` returns ``gelu(up) + k * skip`` (``skip`` shaped like the output, ``k`` a
    1-element tensor). ``affine=(scale, shift)``, each (N, C), is optional (e.g. a GroupNorm from
    ``conv.conv3x3_group_norm``). ``head`` = (weight (1, C, 1, 1), bias (1,)), a 1x1 conv to one channel, is
    applied last: the result is then (N, 1, 2H, 2W)."""
    check_fp32_input(x, "up2_fused")
    n, c, h, w = x.shape
    x = x.contiguous()
    out = torch.empty((n, 1 if head is not None else c, 2 * h, 2 * w), device=x.device, dtype=x.dtype)
    mode = EPILOGUES[epilogue]
    if mode == 1:
        if skip is None or k is None or skip.shape != (n, c, 2 * h, 2 * w) or skip.dtype != x.dtype:
            raise ValueError("gelu_add needs a float32 skip tensor shaped like the output and a scalar k")
        skip = skip.contiguous()
    if affine is not None and any(t.shape != (n, c) or t.dtype != torch.float32 for t in affine):
        raise ValueError(f"affine takes float32 (scale, shift) shaped ({n}, {c})")
    if head is not None and (tuple(head[0].shape) != (1, c, 1, 1) or tuple(head[1].shape) != (1,)):
        raise ValueError(f"head must be a 1x1 conv with bias from {c} channels to 1, got weights {tuple(head[0].shape)}")
    # The scales rounded as PyTorch's kernel forms them (a float32 division): one ulp off in the scale moves
    # the source coordinate of the last rows by ~1e-5 pixels, visible between neighbouring pixels.
    scale_h = float(np.float32(h - 1) / np.float32(2 * h - 1))
    scale_w = float(np.float32(w - 1) / np.float32(2 * w - 1))
    grid = (n if head is not None else n * c, triton.cdiv(4 * h * w, _BLOCK))
    a, b = (t.contiguous() for t in affine) if affine is not None else (x, x)
    head_w, head_b = head if head is not None else (x, x)
    _up2_kernel[grid](x, skip if skip is not None else x, k if k is not None else x, a, b, head_w, head_b, out,
                      h, w, scale_h, scale_w, EPILOGUE=mode, AFFINE=affine is not None,
                      HEAD=c if head is not None else 0, BLOCK=_BLOCK)  # fmt: skip
    return out
