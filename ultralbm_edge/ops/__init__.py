"""Numerical kernels, kept apart from the layers that use them (as in mamba_ssm): the selective scan's reference
and registry here, fused Triton kernels under ``ops.triton`` (imported only when used). Kernels take tensors,
never modules; nothing here imports ``ultralbm_edge.models``."""

from .scan import check_strategy, fused_scans, register_fused_scan, register_scan, scan_strategies, selective_scan
from .scan_ref import selective_scan_ref

__all__ = [
    "check_strategy",
    "fused_scans",
    "register_fused_scan",
    "register_scan",
    "scan_strategies",
    "selective_scan",
    "selective_scan_ref",
]
