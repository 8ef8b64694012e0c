"""The network's dense 3x3 convolutions fused with the GroupNorm, max-pool and GELU around them, in Triton.

Encoder stages 1-3 are ``gelu(max_pool2(group_norm(conv3x3(x))))`` at 256, 128 and 64 pixels a side, the decoder's
last two ``gelu(up2(group_norm(conv3x3(x)))) + k * skip``. With cuDNN, even compiled, those few channels
(3 -> 8 -> 16 -> 24) took over half of the H100's time at batch 256 (benchmarks/results/gpu_h100.md): fp32
convolutions this narrow are far from any GEMM sweet spot, and the norm reads their output twice more. Here:

1. ``_conv_stats_kernel``: each program computes the conv for a tile of pixels as an implicit GEMM on tensor
   cores in 3xTF32 (fp32 accuracy: each operand is split into a TF32 high part and a TF32 remainder), writes it
   and the tile's per-channel mean and centred sum of squares;
2. ``_gn_finalize_kernel``: per image, merges the tiles (Chan's parallel variance: exact and in a fixed order,
   no atomics) into GroupNorm's per-channel ``scale = gamma * rstd`` and ``shift = beta - mean * scale``.
   (Merging in the conv kernel's last program per image instead, with an atomic counter, was slower: 1.11x
   at batch 256 from contention on the counter, 1.03x at batch 1 from the extra barrier and atomic.);
3. encoder: ``_gn_pool_gelu_kernel`` reads the conv output once, normalises, takes each 2x2 window's max and
   applies GELU; decoder: ``upsample.up2_fused`` applies the affine while it interpolates (the bilinear
   weights sum to one, so normalising before or after interpolating is the same).

Inference only, fp32 tensors only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import check_fp32_input, gelu

# Pixel tiles (the GEMM's N) at small batches; tl.dot needs M, N, K >= 16, hence channel blocks of at least 16.
_MAX_SMALL_BLOCK = 128
_MIN_CB = 16
# About one program per SM (H100: 132 SMs); small batches get smaller tiles.
_MIN_PROGRAMS = 128
# With this many programs of _LARGE_BLOCK pixels (~8 waves), throughput tiles are used instead.
_LARGE_BLOCK = 256
_MANY_PROGRAMS = 1024
_POOL_BLOCK = 512


@triton.jit
def _conv3x3_tile(x_img, pix, hh, ww, w_ptr, b_ptr, offs_c, mask_c, H: tl.constexpr, W: tl.constexpr,
                  CIN: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr, KC: tl.constexpr):  # fmt: skip
    """(CB, BLOCK) conv outputs for output channels ``offs_c`` at pixels ``pix = hh * W + ww``, zero padding of
    1: (channels x CIN*9) weights @ (CIN*9 x pixels) gathered patches, KC patch rows per tl.dot. Pixels run
    along the patches' fast axis, so neighbouring threads gather neighbouring pixels (coalesced). Out-of-range
    pixels come with hh = H + 2, so every tap of theirs falls outside the image and one unsigned comparison
    per axis masks the gather."""
    K: tl.constexpr = CIN * 9
    acc = tl.zeros((CB, BLOCK), dtype=tl.float32)
    # A loop, not unrolled: unrolled, the compiler hoists every chunk's gather and index tensors and spills
    # (255 registers for 16 input channels).
    for k0 in tl.range(0, K, KC):
        k = k0 + tl.arange(0, KC)
        dy = k % 9 // 3 - 1
        dx = tl.where(k < K, k % 3 - 1, W + 2)  # padding rows of the last chunk: outside the image too
        offset = (k // 9) * (H * W) + dy * W + dx
        inside = ((hh[None, :] + dy[:, None]).to(tl.uint32) < H) & ((ww[None, :] + dx[:, None]).to(tl.uint32) < W)
        patches = tl.load(x_img + (offset[:, None] + pix[None, :]), mask=inside, other=0.0)
        weights = tl.load(w_ptr + offs_c[:, None] * K + k[None, :], mask=mask_c[:, None] & (k < K)[None, :], other=0.0)
        acc = tl.dot(weights, patches, acc, input_precision="tf32x3")
    return acc + tl.load(b_ptr + offs_c, mask=mask_c, other=0.0)[:, None]


@triton.jit
def _conv_stats_kernel(x_ptr, w_ptr, b_ptr, out_ptr, part_ptr, n_tiles, H: tl.constexpr, W: tl.constexpr,
                       CIN: tl.constexpr, COUT: tl.constexpr, COUT_P: tl.constexpr, CB: tl.constexpr,
                       BLOCK: tl.constexpr, KC: tl.constexpr):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    HW: tl.constexpr = H * W
    offs = tile * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    offs_c = tl.program_id(2) * CB + tl.arange(0, CB)
    mask_c = offs_c < COUT
    hh = tl.where(valid, offs // W, H + 2)
    acc = _conv3x3_tile(x_ptr + n * CIN * HW, offs, hh, offs % W, w_ptr, b_ptr, offs_c, mask_c, H, W, CIN, CB, BLOCK, KC)
    keep = valid[None, :]
    tl.store(out_ptr + n * COUT * HW + offs_c[:, None] * HW + offs[None, :], acc, mask=mask_c[:, None] & keep)
    # Per-channel mean and centred sum of squares of this tile (centring in registers avoids E[x^2] - E[x]^2).
    count = tl.sum(valid.to(tl.float32), axis=0)
    mean = tl.sum(tl.where(keep, acc, 0.0), axis=1) / count
    dev = tl.where(keep, acc - mean[:, None], 0.0)
    part = part_ptr + (n * n_tiles + tile) * 2 * COUT_P
    tl.store(part + offs_c, mean)
    tl.store(part + COUT_P + offs_c, tl.sum(dev * dev, axis=1))


@triton.jit
def _gn_finalize_kernel(part_ptr, gamma_ptr, beta_ptr, scale_ptr, shift_ptr, HW, BLOCK, eps, n_tiles: tl.constexpr,
                        COUT: tl.constexpr, COUT_P: tl.constexpr, GROUP: tl.constexpr, TCHUNK: tl.constexpr):  # fmt: skip
    eps = tl.cast(eps, tl.float32)  # Inductor passes Python floats as fp64
    n = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, COUT_P)
    mask_c = c < COUT
    part = part_ptr + n * n_tiles * 2 * COUT_P
    # One pass over the tiles, TCHUNK at a time: each chunk's channel mean and sum of squares (its tiles' own
    # plus their means' spread), merged into the running ones (Chan et al.). A single read of the partials
    # and few dependent steps: at batch 1 one program merges hundreds of tiles.
    count = 0.0
    mean_c = tl.zeros((COUT_P,), dtype=tl.float32)
    m2_c = tl.zeros((COUT_P,), dtype=tl.float32)
    for t0 in range(0, n_tiles, TCHUNK):
        t = t0 + tl.arange(0, TCHUNK)
        in_range = (t < n_tiles)[:, None]
        tile_n = tl.where(t < n_tiles, tl.minimum(HW - t * BLOCK, BLOCK), 0).to(tl.float32)  # all but the last: BLOCK
        m = tl.load(part + t[:, None] * 2 * COUT_P + c[None, :], mask=in_range, other=0.0)
        m2 = tl.load(part + t[:, None] * 2 * COUT_P + COUT_P + c[None, :], mask=in_range, other=0.0)
        chunk_n = tl.sum(tile_n, axis=0)
        chunk_mean = tl.sum(tile_n[:, None] * m, axis=0) / chunk_n
        dev = tl.where(in_range, m - chunk_mean[None, :], 0.0)
        chunk_m2 = tl.sum(m2 + tile_n[:, None] * dev * dev, axis=0)
        total = count + chunk_n
        delta = chunk_mean - mean_c
        mean_c += delta * (chunk_n / total)
        m2_c += chunk_m2 + delta * delta * (count * chunk_n / total)
        count = total
    # Groups of GROUP channels with equal pixel counts: the same merge across channels.
    same = ((c[:, None] // GROUP) == (c[None, :] // GROUP)) & mask_c[None, :]
    mean_g = tl.sum(tl.where(same, mean_c[None, :], 0.0), axis=1) / GROUP
    dev_g = tl.where(same, mean_c[None, :] - mean_g[:, None], 0.0)
    m2_g = tl.sum(tl.where(same, m2_c[None, :], 0.0) + HW * dev_g * dev_g, axis=1)
    rstd = 1.0 / tl.sqrt(m2_g / (HW * GROUP) + eps)
    scale = tl.load(gamma_ptr + c, mask=mask_c, other=0.0) * rstd
    shift = tl.load(beta_ptr + c, mask=mask_c, other=0.0) - mean_g * scale
    tl.store(scale_ptr + n * COUT + c, scale, mask=mask_c)
    tl.store(shift_ptr + n * COUT + c, shift, mask=mask_c)


@triton.jit
def _gn_pool_gelu_kernel(y_ptr, scale_ptr, shift_ptr, out_ptr, H, W, BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)  # n * C + c, also the index of its scale and shift
    Wo = W // 2
    n_out = (H // 2) * Wo
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < n_out
    top = y_ptr + plane * H * W + (offs // Wo) * (2 * W) + (offs % Wo) * 2
    scale = tl.load(scale_ptr + plane)
    shift = tl.load(shift_ptr + plane)
    best = tl.load(top, mask=valid, other=0.0) * scale + shift
    best = tl.maximum(best, tl.load(top + 1, mask=valid, other=0.0) * scale + shift)
    best = tl.maximum(best, tl.load(top + W, mask=valid, other=0.0) * scale + shift)
    best = tl.maximum(best, tl.load(top + W + 1, mask=valid, other=0.0) * scale + shift)
    tl.store(out_ptr + plane * n_out + offs, gelu(best), mask=valid)


class ConvTiles(NamedTuple):
    """How ``_conv_stats_kernel`` is launched: pixels per program, output channels per program, patch rows
    per tl.dot, and Triton's warps and software-pipelining stages."""

    block: int
    cb: int
    kc: int
    num_warps: int = 4
    num_stages: int = 3


def conv_tiles(batch: int, pixels: int, cin: int, cout: int) -> ConvTiles:
    """The default launch, all output channels per program (powers of two, as Triton's ranges need). Chosen
    from benchmarks/conv_tiles.py on an H100 (benchmarks/results/conv_tiles_h100_b*.json): with many waves of
    programs (batch 256), 256-pixel tiles without software pipelining were 1.10x faster over the five stages;
    at batch 1 the largest tile that still gives about one program per SM, pipelined, was best (smaller
    tiles and more programs were up to 1.5x slower)."""
    kc = 32 if cin * 9 <= 32 else 16
    if batch * triton.cdiv(pixels, _LARGE_BLOCK) >= _MANY_PROGRAMS:
        return ConvTiles(_LARGE_BLOCK, _padded(cout), kc, num_warps=4, num_stages=1)
    block = min(_MAX_SMALL_BLOCK, max(16, triton.next_power_of_2(pixels)))
    while block > 16 and batch * triton.cdiv(pixels, block) < _MIN_PROGRAMS:
        block //= 2
    return ConvTiles(block, _padded(cout), kc)


def _padded(cout: int) -> int:
    return max(_MIN_CB, triton.next_power_of_2(cout))


class GroupNormParams(NamedTuple):
    """An affine GroupNorm as tensors: per-channel ``weight`` and ``bias``, ``groups`` and ``eps``."""

    weight: Tensor
    bias: Tensor
    groups: int
    eps: float


def _check(x: Tensor, weight: Tensor, bias: Tensor, norm: GroupNormParams) -> None:
    check_fp32_input(x, "the fused conv kernels")
    cout, cin = weight.shape[:2]
    if weight.shape[2:] != (3, 3) or cin != x.shape[1]:
        raise ValueError(f"fused conv kernels implement a dense 3x3 conv over {x.shape[1]} channels, got weights {tuple(weight.shape)}")
    if bias.shape != (cout,) or norm.weight.shape != (cout,) or norm.bias.shape != (cout,) or cout % norm.groups:
        raise ValueError("fused conv kernels need a conv bias and an affine GroupNorm over the conv's output channels")


def conv3x3_group_norm(
    x: Tensor, weight: Tensor, bias: Tensor, norm: GroupNormParams, tiles: ConvTiles | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``conv2d(x, weight, bias, padding=1)`` and GroupNorm's per-(image, channel) affine over it:
    ``group_norm(conv) == y * scale + shift`` (scale and shift shaped (N, C)), for a consumer that applies the
    affine as it reads ``y``. ``tiles`` overrides the launch (``conv_tiles``), e.g. to time alternatives
    (benchmarks/conv_tiles.py)."""
    _check(x, weight, bias, norm)
    x = x.contiguous()
    n, cin, h, w = x.shape
    cout = weight.shape[0]
    cout_p = _padded(cout)
    block, cb, kc, num_warps, num_stages = tiles or conv_tiles(n, h * w, cin, cout)
    if any(v < 16 or v & (v - 1) for v in (block, cb, kc)) or cout_p % cb:
        raise ValueError(f"tiles {tiles}: block, cb and kc must be powers of two >= 16, cb at most {cout_p}")
    n_tiles = triton.cdiv(h * w, block)
    y = torch.empty((n, cout, h, w), device=x.device, dtype=x.dtype)
    part = torch.empty((n, n_tiles, 2, cout_p), device=x.device, dtype=torch.float32)
    _conv_stats_kernel[(n, n_tiles, cout_p // cb)](
        x, weight, bias, y, part, n_tiles, H=h, W=w, CIN=cin, COUT=cout, COUT_P=cout_p, CB=cb,
        BLOCK=block, KC=kc, num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    scale = torch.empty((n, cout), device=x.device, dtype=torch.float32)
    shift = torch.empty_like(scale)
    _gn_finalize_kernel[(n,)](
        part, norm.weight, norm.bias, scale, shift, h * w, block, norm.eps, n_tiles,
        COUT=cout, COUT_P=cout_p, GROUP=cout // norm.groups, TCHUNK=min(256, triton.next_power_of_2(n_tiles)),
        num_warps=8,
    )  # fmt: skip
    return y, scale, shift


def conv3x3_gn_pool_gelu(x: Tensor, weight: Tensor, bias: Tensor, norm: GroupNormParams) -> Tensor:
    """``gelu(max_pool2d(group_norm(conv2d(x, weight, bias, padding=1)), 2, 2))`` (exact GELU)."""
    y, scale, shift = conv3x3_group_norm(x, weight, bias, norm)
    n, c, h, w = y.shape
    out = torch.empty((n, c, h // 2, w // 2), device=y.device, dtype=y.dtype)
    grid = (n * c, triton.cdiv((h // 2) * (w // 2), _POOL_BLOCK))
    _gn_pool_gelu_kernel[grid](y, scale, shift, out, h, w, BLOCK=_POOL_BLOCK)
    return out
