"""The networks, one family per file, each registering its named models (see ``_registry``).

Every public module of this package is imported here, so a new network is one new file whose
``register_model(...)`` calls make it known to checkpoint loading, export, training and the CLI.
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from ._registry import ModelSpec, create_model, identify, list_models, model_spec, register_model, strip_prefix
from .mamba import Mamba, ScanLayer, ScanStrategyMixin

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):  # _registry, _fused, shared layers (_layers, _vss, _attention): not families
        importlib.import_module(f"{__name__}.{_module.name}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "Mamba",
    "ModelSpec",
    "ScanLayer",
    "ScanStrategyMixin",
    "count_parameters",
    "create_model",
    "identify",
    "list_models",
    "model_spec",
    "register_model",
    "strip_prefix",
]
