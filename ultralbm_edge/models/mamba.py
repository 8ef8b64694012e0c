"""A pure-PyTorch Mamba-1 block, parameter-for-parameter compatible with ``mamba_ssm.Mamba``, and the one switch
for the scan strategy of a whole network.

Names and shapes (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj) match mamba_ssm 2.2.2 so that
state_dicts written by the authors' code (which uses the CUDA kernels) load unchanged. The scan itself is
delegated to :func:`ultralbm_edge.ops.selective_scan`. Every layer that scans (this Mamba, VMamba's SS2D in
``_vss``) is a :class:`ScanLayer`, whose strategy a network switches for all its layers at once through
:class:`ScanStrategyMixin`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import check_strategy, selective_scan


class ScanLayer(nn.Module):
    """A layer whose recurrences all run through ``ops.selective_scan(..., strategy=self.scan_strategy)``."""

    # Whether every scan call passes the gate z, as Mamba's does. The export's one-node scan forms
    # (export.scan_node) express only that call; VMamba's SS2D scans with z=None (it gates after a LayerNorm).
    gated_scan: bool = True

    def __init__(self) -> None:
        super().__init__()
        # Which solver runs the recurrence; "sequential" is the reference (see ops.selective_scan).
        self.scan_strategy = "sequential"


def dt_bias_init(shape: tuple[int, ...], dt_min: float, dt_max: float, floor: float) -> Tensor:
    """mamba_ssm's dt bias: softplus^-1 of a step size drawn log-uniformly from [dt_min, dt_max] (at least floor)."""
    dt = torch.exp(torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def s4d_real_a_log(rows: int, d_state: int) -> Tensor:
    """log of S4D-real's A = (1, 2, ..., d_state) for each of ``rows`` channels (the scan uses -exp(A_log))."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(rows, 1)


class Mamba(ScanLayer):
    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # mamba_ssm's initialisation: dt log-uniform in [dt_min, dt_max] stored as softplus^-1 in the bias,
        # S4D-real A = -(1..N), D = 1.
        dt_init_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt_bias_init((self.d_inner,), dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(s4d_real_a_log(self.d_inner, d_state))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True  # type: ignore[attr-defined]

    def forward(self, hidden_states: Tensor) -> Tensor:
        """(batch, L, d_model) -> (batch, L, d_model)."""
        length = hidden_states.shape[1]
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (batch, 2*d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])  # causal depthwise conv
        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # bias is added inside the scan
        y = selective_scan(
            x,
            dt,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            strategy=self.scan_strategy,
        )
        return self.out_proj(y.transpose(1, 2))


_Net = TypeVar("_Net", bound="ScanStrategyMixin")


class ScanStrategyMixin(nn.Module):
    """The one switch for the scan strategy of every scanning layer (Mamba, SS2D) in a network (see
    ``ops.scan_strategies()``)."""

    def scan_layers(self) -> list[ScanLayer]:
        return [m for m in self.modules() if isinstance(m, ScanLayer)]

    @property
    def scan_strategy(self) -> str:
        """The strategy all scanning layers use ("" for a network without any)."""
        strategies = {m.scan_strategy for m in self.scan_layers()}
        if len(strategies) > 1:
            raise RuntimeError(f"scanning layers disagree on the scan strategy: {sorted(strategies)}")
        return strategies.pop() if strategies else ""

    def set_scan_strategy(self: _Net, strategy: str) -> _Net:
        """Route every scanning layer's recurrences through ``strategy``; returns the network."""
        check_strategy(strategy)
        for m in self.scan_layers():
            m.scan_strategy = strategy
        return self

    @contextmanager
    def using_scan(self, strategy: str) -> Iterator[None]:
        """Run the block inside on ``strategy``, then restore each scanning layer's previous strategy."""
        previous = [(m, m.scan_strategy) for m in self.scan_layers()]
        self.set_scan_strategy(strategy)
        try:
            yield
        finally:
            for m, s in previous:
                m.scan_strategy = s
