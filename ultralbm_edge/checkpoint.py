"""Loading and saving checkpoints: the authors' two formats, DataParallel prefixes, and our own.

Accepted on load (always with ``torch.load(weights_only=True)``, so a checkpoint can never run code):

- a raw ``state_dict`` (the authors' ``best.pth``),
- a dict with ``model_state_dict`` (the authors' resume file ``latest.pth``),
- a dict with ``state_dict`` (a PyTorch-Lightning checkpoint; the model's registered ``checkpoint_filter``
  removes its LightningModule's attribute prefix),
- any of those with DataParallel's ``module.`` prefix,
- our format: a dict with ``format == "ultralbm-edge/1"``, ``state_dict`` and metadata (variant, channels,
  image size, preprocessing, threshold, provenance).

Which registered model the weights belong to is recognised from their shapes (``models.identify``), so a wrong or
foreign checkpoint is named precisely.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ultralbm_edge import __version__
from ultralbm_edge.runtime.errors import UserError
from ultralbm_edge.runtime.files import file_sha256, write_atomic
from ultralbm_edge.runtime.metadata import MetadataError, ModelMetadata
from ultralbm_edge.runtime.preprocess import IMAGE_SIZE, PREPROCESSING_ID

from .models import create_model, identify, list_models, model_spec, strip_prefix

FORMAT = "ultralbm-edge/1"
DEFAULT_THRESHOLD = 0.5


class CheckpointError(UserError, ValueError):
    """A checkpoint could not be used; the message names the file and what to do."""


@dataclass
class Checkpoint:
    """A loaded model with the facts a deployment needs to reproduce it."""

    model: nn.Module
    variant: str  # the registry name
    path: str
    sha256: str
    source_format: str  # "official-state_dict", "official-resume", "ultralbm-edge/1"
    image_size: int = IMAGE_SIZE
    threshold: float = DEFAULT_THRESHOLD
    preprocessing: str = PREPROCESSING_ID
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> list[int]:
        return list(getattr(self.model, "channels", []))

    def metadata(self, **overrides: Any) -> ModelMetadata:
        """The metadata a model file exported from this checkpoint carries (``overrides``: scan, precision, ...)."""
        spec = model_spec(self.variant)
        values: dict[str, Any] = dict(
            variant=self.variant,
            channels=self.channels,
            image_size=self.image_size,
            preprocessing=self.preprocessing,
            threshold=self.threshold,
            toolkit_version=__version__,
            source_checkpoint_sha256=self.sha256,
            fp32_scopes=list(spec.fp32_scopes),
            unquantized_scopes=list(spec.unquantized_scopes),
        )
        values.update(overrides)
        return ModelMetadata(**values)


# DataParallel's wrapper, whatever the model.
_strip_data_parallel = strip_prefix("module.")


def _unpack(obj: Any, path: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Return (state_dict, source format, our metadata) from whatever torch.load gave."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict — pass a .pth written by training")
    if obj.get("format") == FORMAT:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        return _strip_data_parallel(dict(obj["state_dict"])), FORMAT, meta
    if "model_state_dict" in obj:
        return _strip_data_parallel(dict(obj["model_state_dict"])), "official-resume", {}
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return _strip_data_parallel(dict(obj["state_dict"])), "state_dict-wrapper", {}
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_data_parallel(dict(obj)), "official-state_dict", {}
    raise CheckpointError(
        f"{path}: a dict with keys {sorted(obj)[:8]} but no model weights — expected a state_dict, "
        "a dict with 'model_state_dict', or an ultralbm-edge checkpoint"
    )


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch words it "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module x is blocked".
        found = re.search(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", str(e), re.IGNORECASE)
        if found:
            raise CheckpointError(
                f"{path}: refused as unsafe — it references the Python object {found.group(1)}, and loading it could "
                "execute code. Re-save only the state_dict (torch.save(model.state_dict(), ...)) in a trusted environment."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt, or a pickle that is not a torch.save file)") from None
    except Exception as e:  # zip/pickle corruption, not a torch file at all
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def load_checkpoint(path: Path | str, variant: str | None = None) -> Checkpoint:
    """Load any supported checkpoint file into an eval-mode model on the CPU.

    ``variant`` forces a registered model; by default it is read from the file or recognised from the weights.
    Raises :class:`CheckpointError` with the missing/unexpected keys when the weights do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file — check the path")
    state_dict, source_format, meta = _unpack(_torch_load(path), path)
    recognised = identify(state_dict)
    variant = variant or meta.get("variant") or (recognised[0] if recognised else None)
    if variant is None:
        raise CheckpointError(
            f"{path}: not an UltraLBM-UNet checkpoint, nor one of the other registered models {list_models()} "
            f"(their signature weights are missing; first keys: {list(state_dict)[:5]})"
        )
    try:
        spec = model_spec(variant)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if spec.checkpoint_filter is not None:
        state_dict = spec.checkpoint_filter(state_dict)
    model = create_model(variant)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or wrong_shape:
        looks = f"its weights look like variant {recognised[0]!r}" if recognised else "it does not look like any registered model"
        raise CheckpointError(
            f"{path}: does not fit variant {variant!r} ({looks}). "
            f"missing keys ({len(missing)}): {missing[:6]}; unexpected keys ({len(unexpected)}): {unexpected[:6]}; "
            f"wrong shapes ({len(wrong_shape)}): {wrong_shape[:6]}"
        )
    model.load_state_dict(state_dict)
    model.eval()
    ckpt = Checkpoint(
        model=model,
        variant=variant,
        path=str(path),
        sha256=file_sha256(path),
        source_format=source_format,
        image_size=meta.get("image_size", IMAGE_SIZE),
        threshold=meta.get("threshold", DEFAULT_THRESHOLD),
        preprocessing=meta.get("preprocessing", PREPROCESSING_ID),
        provenance=dict(meta.get("provenance", {})),
    )
    try:
        ckpt.metadata().validate(str(path))  # what every exported file will carry: refuse bad values here
    except MetadataError as e:
        raise CheckpointError(str(e)) from None
    return ckpt


def save_checkpoint(
    path: Path | str,
    model: nn.Module,
    variant: str,
    provenance: Mapping[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    image_size: int = IMAGE_SIZE,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write our self-describing format (plain containers and tensors only, so ``weights_only`` loads it).

    ``extra`` adds top-level entries (training keeps its resumable optimizer/scheduler state there)."""
    payload = {
        "format": FORMAT,
        "variant": variant,
        "channels": list(getattr(model, "channels", [])),
        "image_size": int(image_size),
        "preprocessing": PREPROCESSING_ID,
        "threshold": float(threshold),
        "provenance": dict(provenance or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **dict(extra or {}),
    }
    write_atomic(path, lambda tmp: torch.save(payload, tmp))
