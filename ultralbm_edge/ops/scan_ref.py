"""The selective scan (Mamba-1 S6 recurrence) in plain PyTorch: the reference, and the exact solvers it can use.

The recurrence, per batch b, channel d and state n::

    dA[t]  = exp(delta[t] * A[d, n])            # decay, in (0, 1] because A < 0 and delta > 0
    h[t]   = dA[t] * h[t-1] + delta[t] * B[n, t] * u[t]
    y[t]   = sum_n C[n, t] * h[t, n] + D[d] * u[t]
    y[t]  *= silu(z[t])                         # when z is given

Tensor layout follows ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``:
u, delta, z: (batch, d_inner, L); A: (d_inner, d_state); B, C: (batch, d_state, L); D: (d_inner,).

A *solver* computes the hidden states h (batch, d_inner, L, d_state) from decays a and inputs b of the same shape,
i.e. solves h[t] = a[t] * h[t-1] + b[t] with h[-1] = 0 along dim 2. Every solver only ever multiplies decays <= 1
(no exp of a running positive sum), so none can overflow in fp32 or fp16. Fused kernels (``ops.triton.scan``) are
tested against :func:`selective_scan_ref` and fall back to it for gradients; nothing here dispatches.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

Solver = Callable[[Tensor, Tensor], Tensor]


def scan_sequential(a: Tensor, b: Tensor) -> Tensor:
    """The recurrence one step at a time (what mamba_ssm's selective_scan_ref does)."""
    h = torch.zeros_like(b[:, :, 0])
    hs = []
    for t in range(a.shape[2]):
        h = a[:, :, t] * h + b[:, :, t]
        hs.append(h)
    return torch.stack(hs, dim=2)


def scan_parallel(a: Tensor, b: Tensor) -> Tensor:
    """Log-depth Hillis-Steele prefix scan over the affine maps h -> a*h + b.

    ceil(log2 L) rounds; round k composes each position with the one 2^k steps earlier
    (padding with the identity map a=1, b=0). Only products of decays <= 1 are formed.
    """
    length = a.shape[2]
    shift = 1
    while shift < length:
        a_prev = F.pad(a[:, :, : length - shift], (0, 0, shift, 0), value=1.0)
        b_prev = F.pad(b[:, :, : length - shift], (0, 0, shift, 0), value=0.0)
        b = a * b_prev + b
        a = a * a_prev
        shift *= 2
    return b


def scan_blelloch(a: Tensor, b: Tensor) -> Tensor:
    """Work-efficient (Blelloch-style) log-depth scan: combine neighbouring pairs, solve the half-length
    problem recursively, then fill in the even positions. About 2L work instead of L log L, in log2(L)
    levels of a few ops each, which suits graph runtimes with per-op overhead (ONNX Runtime, TensorRT).
    """
    bsz, dim, length, n = a.shape
    if length == 1:
        return b
    if length % 2:  # pad with the identity map so pairs line up
        a = F.pad(a, (0, 0, 0, 1), value=1.0)
        b = F.pad(b, (0, 0, 0, 1), value=0.0)
    half = a.shape[2] // 2
    a2 = a.reshape(bsz, dim, half, 2, n)
    b2 = b.reshape(bsz, dim, half, 2, n)
    a_even, a_odd = a2[:, :, :, 0], a2[:, :, :, 1]
    b_even, b_odd = b2[:, :, :, 0], b2[:, :, :, 1]
    h_odd = scan_blelloch(a_odd * a_even, a_odd * b_even + b_odd)
    h_before = F.pad(h_odd[:, :, :-1], (0, 0, 1, 0), value=0.0)
    h_even = a_even * h_before + b_even
    return torch.stack([h_even, h_odd], dim=3).reshape(bsz, dim, 2 * half, n)[:, :, :length]


def _chunk_size(length: int, target: int = 16) -> int:
    size = min(target, length)
    while length % size:
        size -= 1
    return size


def scan_chunked(a: Tensor, b: Tensor) -> Tensor:
    """Chunked scan: a log-depth scan inside fixed-size chunks (all chunks at once), then a short
    sequential carry across chunks, then one fused correction. Fewer, larger ops than ``parallel``.
    """
    bsz, dim, length, n = a.shape
    t = _chunk_size(length)
    k = length // t
    a_c = a.reshape(bsz, dim * k, t, n)
    b_c = b.reshape(bsz, dim * k, t, n)
    # Local solutions with zero initial state, and the cumulative decay inside each chunk.
    h_local = scan_parallel(a_c, b_c).reshape(bsz, dim, k, t, n)
    decay = _cumprod_parallel(a_c).reshape(bsz, dim, k, t, n)
    # Carry the state from the end of one chunk into the next (k steps, k = L / t).
    carries = [torch.zeros_like(h_local[:, :, 0, 0])]
    for i in range(k - 1):
        carries.append(decay[:, :, i, -1] * carries[-1] + h_local[:, :, i, -1])
    carry = torch.stack(carries, dim=2).unsqueeze(3)
    return (h_local + decay * carry).reshape(bsz, dim, length, n)


def _cumprod_parallel(a: Tensor) -> Tensor:
    """Cumulative product along dim 2 in log depth (no CumProd op, which TensorRT lacks)."""
    length = a.shape[2]
    shift = 1
    while shift < length:
        a = a * F.pad(a[:, :, : length - shift], (0, 0, shift, 0), value=1.0)
        shift *= 2
    return a


SOLVERS: dict[str, Solver] = {
    "sequential": scan_sequential,
    "parallel": scan_parallel,
    "blelloch": scan_blelloch,
    "chunked": scan_chunked,
}


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                       z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                       solve: Solver = scan_sequential) -> Tensor:  # fmt: skip
    """Selective scan with mamba_ssm's ``selective_scan_fn`` signature; returns y (batch, d_inner, L).

    ``solve`` is the recurrence solver (default: step by step). Computed in fp32 whatever the input dtype.
    """
    dtype_in = u.dtype
    u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    # (batch, d_inner, L, d_state) operands of h[t] = a[t] * h[t-1] + b[t].
    dt = delta.unsqueeze(-1)
    a = torch.exp(dt * A.float()[:, None, :])
    b = dt * B.transpose(1, 2).unsqueeze(1) * u.unsqueeze(-1)
    h = solve(a, b)
    y = (h * C.transpose(1, 2).unsqueeze(1)).sum(-1)  # Mul+ReduceSum: faster than Einsum in ORT at batch > 1
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)
