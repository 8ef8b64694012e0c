"""Fused selective scan (Mamba-1 S6 forward) in Triton, for this model's small shapes.

One launch does what ``ops.selective_scan`` spells out in a dozen tensor ops: delta bias and softplus, the
decays exp(delta * A), the inputs delta * B * u, the recurrence over time, the read-out through C, the skip
D * u and the gate silu(z). Nothing of size (batch, d_inner, L, d_state) ever reaches device memory.

Each program owns one sequence and BLOCK_D channels, and walks the sequence in chunks of BLOCK_L steps.
Inside a chunk the recurrence h[t] = a[t] h[t-1] + b[t] is solved in log depth with
``tl.associative_scan`` over the affine maps (a, b) (the same composition as the "parallel" and "blelloch"
strategies, so only products of decays <= 1 are formed and fp16/bf16 inputs cannot overflow); the state
left by one chunk seeds the next. All arithmetic is fp32 whatever the input dtype; y is written in u's dtype.

The recurrence math is shared with the pure-PyTorch solvers in ``ultralbm_edge.ops.scan_ref`` (the reference
this kernel is tested against) and is the natural body of a TensorRT plugin for the export's "plugin" strategy.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..scan_ref import scan_chunked, selective_scan_ref
from .common import interpreting

Opt = Optional[Tensor]

# Time steps per chunk, held in registers (BLOCK_D x d_state x BLOCK_L fp32 values per operand). With d_state 16,
# BLOCK_D x BLOCK_L = 8 x 64 and 1 x 256 compile for sm_90 to 255 registers without spills (4 x 128, 2 x 256 and
# 1 x 512 spill), so only single-channel programs (small batches) take the longer chunks: fewer dependent steps.
_BLOCK_L = 64
_SINGLE_CHANNEL_BLOCK_L = 256
# Below this many programs the GPU's 132 SMs idle, so narrower channel blocks are used (small batches).
_MIN_PROGRAMS = 264


@triton.jit
def _compose(a_prev, b_prev, a_next, b_next):
    # (h -> a_next * h + b_next) after (h -> a_prev * h + b_prev).
    return a_prev * a_next, a_next * b_prev + b_next


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr,
    dim, dstate, length,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_n, s_B_l,
    s_C_b, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_o_b, s_o_d, s_o_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    LOG2E: tl.constexpr = 1.4426950408889634
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate

    # Padded channels/states get A = 0 (decay 1) and B = C = 0: they stay at zero and are never stored.
    A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask_d[:, None] & mask_n[None, :], other=0.0)
    A2 = A.to(tl.float32) * LOG2E  # exp(x) = exp2(x * log2 e)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    u_base = u_ptr + pid_b * s_u_b + offs_d[:, None] * s_u_d
    dt_base = dt_ptr + pid_b * s_dt_b + offs_d[:, None] * s_dt_d
    B_base = B_ptr + pid_b * s_B_b + offs_n[:, None] * s_B_n
    C_base = C_ptr + pid_b * s_C_b + offs_n[:, None] * s_C_n
    z_base = z_ptr + pid_b * s_z_b + offs_d[:, None] * s_z_d
    o_base = out_ptr + pid_b * s_o_b + offs_d[:, None] * s_o_d
    is_last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, None, :]

    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for l0 in tl.range(0, length, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        mask_l = offs_l < length
        mask_dl = mask_d[:, None] & mask_l[None, :]
        mask_nl = mask_n[:, None] & mask_l[None, :]
        u = tl.load(u_base + offs_l[None, :] * s_u_l, mask=mask_dl, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + offs_l[None, :] * s_dt_l, mask=mask_dl, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:  # torch.nn.functional.softplus with its default threshold 20, as mamba_ssm's kernel
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        # Steps past the end become identity maps (dt = 0: decay 1, input 0), so the carry survives them.
        dt = tl.where(mask_dl, dt, 0.0)
        Bv = tl.load(B_base + offs_l[None, :] * s_B_l, mask=mask_nl, other=0.0).to(tl.float32)
        Cv = tl.load(C_base + offs_l[None, :] * s_C_l, mask=mask_nl, other=0.0).to(tl.float32)

        decay = tl.exp2(dt[:, None, :] * A2[:, :, None])  # (BLOCK_D, BLOCK_N, BLOCK_L)
        inp = (dt * u)[:, None, :] * Bv[None, :, :]
        a_cum, b_cum = tl.associative_scan((decay, inp), axis=2, combine_fn=_compose)
        hs = a_cum * h[:, :, None] + b_cum
        y = tl.sum(hs * Cv[None, :, :], axis=1)  # (BLOCK_D, BLOCK_L)
        h = tl.sum(tl.where(is_last, hs, 0.0), axis=2)

        if HAS_D:
            y = y + u * Dv[:, None]
        if HAS_Z:
            z = tl.load(z_base + offs_l[None, :] * s_z_l, mask=mask_dl, other=0.0).to(tl.float32)
            y = y * (z * tl.sigmoid(z))
        tl.store(o_base + offs_l[None, :] * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask_dl)


def _block_sizes(batch: int, dim: int, dstate: int, length: int) -> tuple[int, int, int]:
    block_n = triton.next_power_of_2(dstate)
    block_d = min(8, triton.next_power_of_2(dim))
    while block_d > 1 and batch * triton.cdiv(dim, block_d) < _MIN_PROGRAMS:
        block_d //= 2
    block_l = _SINGLE_CHANNEL_BLOCK_L if block_d == 1 else _BLOCK_L
    block_l = max(16, block_l * 16 // max(16, block_n))  # larger states: shorter chunks, the same registers
    block_l = min(block_l, triton.next_power_of_2(length))
    return block_d, block_n, block_l


def selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Opt, z: Opt, delta_bias: Opt,
                       delta_softplus: bool) -> Tensor:  # fmt: skip
    """The fused kernel; arguments and result as ``ops.selective_scan`` (any strides, real A only)."""
    batch, dim, length = u.shape
    dstate = A.shape[1]
    if A.is_complex() or B.dim() != 3 or C.dim() != 3:
        raise ValueError("the Triton scan supports real A and per-batch B, C of shape (batch, d_state, L) (Mamba-1)")
    out = torch.empty((batch, dim, length), device=u.device, dtype=u.dtype)
    if length == 0:
        return out
    block_d, block_n, block_l = _block_sizes(batch, dim, dstate, length)
    dummy = u  # stands in for absent optional operands; never read (HAS_* are compile-time false)
    z_ = z if z is not None else dummy
    z_strides = z_.stride()
    grid = (batch, triton.cdiv(dim, block_d))
    _selective_scan_fwd_kernel[grid](
        u, delta, A, B, C,
        D if D is not None else dummy, z_, delta_bias if delta_bias is not None else dummy, out,
        dim, dstate, length,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *z_strides, *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l,
        num_warps=4,
    )  # fmt: skip
    return out


class _TritonSelectiveScan(torch.autograd.Function):
    """Forward through the kernel; backward by recomputing the pure-PyTorch reference with the "chunked" solver
    (same function, differentiable), so training can use the fast forward without a hand-written backward kernel."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):  # type: ignore[override]
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        return selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        saved = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(need) if t is not None else None for t, need in zip(saved, ctx.needs_input_grad)]
        with torch.enable_grad():
            y = selective_scan_ref(*inputs, delta_softplus=ctx.delta_softplus, solve=scan_chunked)
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(y, wanted, grad_out))
        return (*[next(grads) if t is not None and t.requires_grad else None for t in inputs], None)


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Opt, z: Opt, delta_bias: Opt,
                          delta_softplus: bool) -> Tensor:  # fmt: skip
    """``ops.selective_scan(..., strategy="triton")`` (which passes every argument): the fused kernel on CUDA
    tensors, differentiable."""
    if u.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"scan strategy 'triton' runs on CUDA tensors, got tensors on {u.device}: "
            "move the model to a GPU, or pick a CPU strategy such as 'chunked'"
        )
    args = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return _TritonSelectiveScan.apply(*args, delta_softplus)
    return selective_scan_fwd(*args, delta_softplus)
