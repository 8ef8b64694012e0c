"""Model registry: variant name -> constructor arguments (one model per file, as in timm)."""

from __future__ import annotations

from dataclasses import dataclass

from .mamba import Mamba
from .ultralbm_unet import UltraLBMUNet, channel_list


@dataclass(frozen=True)
class Variant:
    name: str
    channel_multiplier: float
    description: str


VARIANTS: dict[str, Variant] = {
    "ultralbm": Variant("ultralbm", 1.0, "UltraLBM-UNet, 34,166 parameters (paper: 0.034M)"),
    "ultralbm-t": Variant("ultralbm-t", 0.5, "UltraLBM-UNet-T, the 0.5x distillation student (paper: 0.011M)"),
}


def create_model(variant: str = "ultralbm", scan: str = "sequential") -> UltraLBMUNet:
    """Build an untrained model of ``variant`` (see ``VARIANTS``) whose Mamba blocks use scan strategy ``scan``."""
    try:
        v = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown model variant {variant!r}; choose one of {sorted(VARIANTS)}") from None
    return UltraLBMUNet(channel_multiplier=v.channel_multiplier).set_scan_strategy(scan)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["Mamba", "UltraLBMUNet", "VARIANTS", "Variant", "channel_list", "count_parameters", "create_model"]
