"""VMamba's SS2D (a selective scan over an image in four directions) and VSSBlock, as ResMamba-ULite and DermoMamba
use them.

Both peers copy ``SS2D`` from VMamba v0 (via VM-UNet) and call ``mamba_ssm``'s ``selective_scan_fn`` directly,
not ``mamba_ssm.Mamba``. Parameter names and shapes here equal theirs (``in_proj``, ``conv2d``, ``x_proj_weight``
(4, R+2N, D), ``dt_projs_weight`` (4, D, R), ``dt_projs_bias`` (4, D), ``A_logs`` (4D, N), ``Ds`` (4D,),
``out_norm``, ``out_proj``), so their state_dicts load unchanged.

The four directions (row-major, column-major, and both reversed) each have their own A, D, dt and projections.
selective_scan_fn runs them as one call with grouped B/C of shape (batch, 4, N, L); ``ops.selective_scan`` takes
one B/C per sequence, so here each direction is one call: the same recurrence, channel for channel, on whatever
strategy the network is switched to (``ScanLayer``). Unlike Mamba, SS2D passes no gate to the scan (z=None: it
gates after a LayerNorm), which the export's one-node scan forms do not express (``ModelSpec.lowered_scan``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import selective_scan
from .mamba import ScanLayer, dt_bias_init, s4d_real_a_log

DIRECTIONS = 4


class SS2D(ScanLayer):
    """(B, H, W, d_model) -> (B, H, W, d_model): in_proj -> depthwise conv + SiLU -> four-direction selective scan,
    summed -> LayerNorm -> gate by SiLU(z) -> out_proj. VMamba v0's defaults: d_conv=3, expand=2,
    dt_rank=ceil(d_model/16), no bias in the projections, a bias in the conv."""

    gated_scan = False

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16)
        k, d, r, n = DIRECTIONS, self.d_inner, self.dt_rank, d_state

        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        self.conv2d = nn.Conv2d(d, d, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=d, bias=True)
        # VMamba's init, one copy per direction: x_proj as nn.Linear's, dt_proj uniform(+-1/sqrt(R)) with
        # softplus^-1 of a log-uniform dt in the bias, S4D-real A = -(1..N), D = 1.
        bound = 1 / math.sqrt(d)
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d, r).uniform_(-(r**-0.5), r**-0.5))
        self.dt_projs_bias = nn.Parameter(dt_bias_init((k, d), dt_min, dt_max, dt_init_floor))
        self.A_logs = nn.Parameter(s4d_real_a_log(k * d, n))
        self.A_logs._no_weight_decay = True  # type: ignore[attr-defined]
        self.Ds = nn.Parameter(torch.ones(k * d))
        self.Ds._no_weight_decay = True  # type: ignore[attr-defined]
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, d_model, bias=False)

    def _scan(self, x: Tensor) -> Tensor:
        """(B, d, H, W) -> the four directions' scan outputs, each back in row-major order, summed: (B, d, L)."""
        b, d, h, w = x.shape
        length = h * w
        k, n, r = DIRECTIONS, self.d_state, self.dt_rank
        rows = x.reshape(b, d, length)
        cols = x.transpose(2, 3).reshape(b, d, length)
        xs = torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)  # (B, 4, d, L)
        # The authors' einsums as MatMuls (ONNX Runtime and TensorRT run those better than Einsum).
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (4, R+2N, d) @ (B, 4, d, L) -> (B, 4, R+2N, L)
        dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (4, d, R) @ (B, 4, R, L) -> (B, 4, d, L)
        a = -torch.exp(self.A_logs.float()).view(k, d, n)
        ds = self.Ds.float().view(k, d)
        bias = self.dt_projs_bias.float()
        ys = [
            selective_scan(xs[:, i].float(), dts[:, i].float(), a[i], bs[:, i].float(), cs[:, i].float(), ds[i],
                           delta_bias=bias[i], delta_softplus=True, strategy=self.scan_strategy)  # fmt: skip
            for i in range(k)
        ]

        def col_to_row(y: Tensor) -> Tensor:  # a column-major sequence back in row-major order
            return y.reshape(b, d, w, h).transpose(2, 3).reshape(b, d, length)

        # The authors' order of the sum (fp32 addition is not associative).
        return ys[0] + ys[2].flip(-1) + col_to_row(ys[1]) + col_to_row(ys[3].flip(-1))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, d) each
        xi = F.silu(self.conv2d(xi.permute(0, 3, 1, 2)))
        y = self._scan(xi).transpose(1, 2).reshape(b, h, w, -1)
        return self.out_proj(self.out_norm(y) * F.silu(z))


class VSSBlock(nn.Module):
    """x + SS2D(LayerNorm(x)) on channels-last input: VMamba's VSSBlock with the peers' drop_path 0 (timm's
    DropPath holds no parameters, so an identity stands in for it)."""

    def __init__(self, hidden_dim: int, d_state: int = 16) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.self_attention = SS2D(d_model=hidden_dim, d_state=d_state)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.self_attention(self.ln_1(x))
