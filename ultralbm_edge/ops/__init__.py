"""Numerical kernels (the selective scan) kept apart from the layers that use them, as in mamba_ssm."""

from .scan import fused_scans, register_fused_scan, register_scan, scan_strategies, selective_scan

__all__ = ["fused_scans", "register_fused_scan", "register_scan", "scan_strategies", "selective_scan"]
