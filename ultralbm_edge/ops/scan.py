"""One entry point for the selective scan, ``selective_scan(..., strategy=name)``, and the registry of strategies.

A strategy is either a *solver* of the recurrence h[t] = a[t] h[t-1] + b[t] (``register_scan``; the pure-PyTorch
ones live in ``scan_ref`` and all export to ONNX by tracing) or a *fused* implementation with selective_scan's own
signature (``register_fused_scan``): mamba_ssm's CUDA kernel, this package's Triton kernel, and the export's
graph node. The export derives its list of traceable forms from this registry, so a newly registered solver is
exportable at once.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from torch import Tensor

from .scan_ref import SOLVERS, Solver, selective_scan_ref

FusedScanFn = Callable[..., Tensor]

_SOLVERS: dict[str, Solver] = dict(SOLVERS)
_FUSED: dict[str, FusedScanFn] = {}


def register_scan(name: str) -> Callable[[Solver], Solver]:
    """Register a linear-recurrence solver (a, b) -> h under ``name`` (see ``scan_ref``)."""

    def deco(fn: Solver) -> Solver:
        _SOLVERS[name] = fn
        return fn

    return deco


def register_fused_scan(name: str) -> Callable[[FusedScanFn], FusedScanFn]:
    """Register a whole selective-scan implementation (selective_scan's signature, without ``strategy``)."""

    def deco(fn: FusedScanFn) -> FusedScanFn:
        _FUSED[name] = fn
        return fn

    return deco


def scan_strategies() -> list[str]:
    """Names of the registered recurrence solvers (all traceable to plain ONNX operators)."""
    return sorted(_SOLVERS)


def fused_scans() -> list[str]:
    """Names of the registered whole-scan implementations (see ``register_fused_scan``)."""
    return sorted(_FUSED)


def check_strategy(strategy: str) -> str:
    if strategy not in _SOLVERS and strategy not in _FUSED:
        raise ValueError(f"unknown scan strategy {strategy!r}; choose one of {scan_strategies() + fused_scans()}")
    return strategy


@register_fused_scan("cuda")
def _mamba_ssm_cuda(*args: Any) -> Tensor:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # optional GPU extra

    return selective_scan_fn(*args)


@register_fused_scan("triton")
def _triton(*args: Any) -> Tensor:
    from .triton.scan import selective_scan_triton  # needs triton and a GPU (or Triton's interpreter)

    return selective_scan_triton(*args)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    z: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = False,
    strategy: str = "sequential",
) -> Tensor:
    """Selective scan with mamba_ssm's ``selective_scan_fn`` signature; returns y (batch, d_inner, L).

    ``strategy`` names a registered solver (``scan_strategies()``) or a fused implementation (``fused_scans()``):
    ``"cuda"`` for mamba_ssm's kernel when it is installed, ``"triton"`` for the Triton kernel of
    ``ops.triton.scan`` (both need the tensors on a GPU), and whatever the export registers.
    """
    if strategy in _FUSED:
        return _FUSED[strategy](u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    solve = _SOLVERS[check_strategy(strategy)]
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, solve=solve)
