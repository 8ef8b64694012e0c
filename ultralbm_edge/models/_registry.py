"""The model registry (as timm's): each network family's file registers its named models with the facts a
deployment needs, so a new network is one new file under ``models/`` and every tool picks it up.

A :class:`ModelSpec` says how to build the network, how to recognise its weights in a checkpoint (keys and their
shapes), how to remap foreign checkpoints of it, and its deployment facts: which ONNX node scopes hold its first
conv and its head (kept out of INT8), which must stay FP32 in reduced precision (the Mamba blocks), and which scan
forms the export may give it. Export writes the node-scope facts into the model file's metadata, so the torch-free
tools read them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from ultralbm_edge.runtime.errors import UserError


class UnknownModel(UserError, ValueError):
    """A model name that no registered family provides."""


Signature = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], nn.Module]  # an untrained network, (N, 3, S, S) in [0, 255] -> (N, 1, S, S) probabilities
    description: str
    # State_dict keys and their shapes that together only this model's weights have (how checkpoints are
    # recognised, after ``checkpoint_filter``).
    signature: Signature
    # ONNX node-name fragments (see runtime.metadata.ModelMetadata): first conv and head, kept out of INT8 ...
    unquantized_scopes: tuple[str, ...] = ()
    # ... and the parts kept in FP32 in FP16 and INT8 models.
    fp32_scopes: tuple[str, ...] = ("/mamba/",)
    # Remaps a foreign checkpoint's state_dict to this model's keys (timm's checkpoint_filter_fn); None: as is.
    checkpoint_filter: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Whether the export may emit the scan as one ultralbm::SelectiveScan node (the lowered forms: loop,
    # linear_attention, plugin). That node is Mamba's gated call; networks with ungated scans (VMamba's SS2D,
    # ScanLayer.gated_scan False) export with a traced strategy instead.
    lowered_scan: bool = True
    paper: str = ""  # the source of the design and its reported size

    def matches(self, state_dict: Mapping[str, Any]) -> bool:
        if self.checkpoint_filter is not None:
            state_dict = self.checkpoint_filter(dict(state_dict))
        for key, shape in self.signature:
            value = state_dict.get(key)
            if value is None or tuple(getattr(value, "shape", ())) != shape:
                return False
        return True


def strip_prefix(prefix: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A ``checkpoint_filter`` that removes ``prefix`` when every key has it (a wrapper's attribute name, e.g. a
    PyTorch-Lightning module's ``model.``)."""

    def strip(state_dict: dict[str, Any]) -> dict[str, Any]:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix) :]: v for k, v in state_dict.items()}
        return state_dict

    return strip


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModel(f"unknown model variant {name!r}; choose one of {list_models()}") from None


def identify(state_dict: Mapping[str, Any]) -> list[str]:
    """Registered models whose signature the weights carry (normally one)."""
    return [name for name, spec in sorted(_REGISTRY.items()) if spec.matches(state_dict)]


def create_model(name: str = "ultralbm", scan: str = "sequential") -> nn.Module:
    """An untrained ``name`` (see ``list_models()``) in eval mode, its Mamba blocks on scan strategy ``scan``."""
    model = model_spec(name).build()
    set_scan = getattr(model, "set_scan_strategy", None)
    return (set_scan(scan) if set_scan else model).eval()
