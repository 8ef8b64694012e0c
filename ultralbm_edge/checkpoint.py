"""Loading and saving checkpoints: the authors' two formats, DataParallel prefixes, and our own.

Accepted on load (always with ``torch.load(weights_only=True)``, so a checkpoint can never run code):

- a raw ``state_dict`` (the authors' ``best.pth``),
- a dict with ``model_state_dict`` (the authors' resume file ``latest.pth``),
- either of those with DataParallel's ``module.`` prefix,
- our format: a dict with ``format == "ultralbm-edge/1"``, ``state_dict`` and metadata (variant, channels,
  image size, preprocessing, threshold, provenance).

The variant is inferred from the weights' shapes, so a wrong or foreign checkpoint is named precisely.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ultralbm_edge.runtime.preprocess import IMAGE_SIZE, PREPROCESSING_ID

from .models import VARIANTS, UltraLBMUNet, channel_list, create_model

FORMAT = "ultralbm-edge/1"
DEFAULT_THRESHOLD = 0.5


class CheckpointError(ValueError):
    """A checkpoint could not be used; the message names the file and what to do."""


@dataclass
class Checkpoint:
    """A loaded model with the facts a deployment needs to reproduce it."""

    model: UltraLBMUNet
    variant: str
    path: str
    sha256: str
    source_format: str  # "official-state_dict", "official-resume", "ultralbm-edge/1"
    image_size: int = IMAGE_SIZE
    threshold: float = DEFAULT_THRESHOLD
    preprocessing: str = PREPROCESSING_ID
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> list[int]:
        return list(self.model.channels)


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def guess_variant(state_dict: Mapping[str, Any]) -> str | None:
    """Name the variant whose first-layer width matches, or None if the weights are not UltraLBM-UNet's."""
    w = state_dict.get("encoder1.0.weight")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        return None
    for name, v in VARIANTS.items():
        if channel_list(v.channel_multiplier)[0] == w.shape[0]:
            return name
    return None


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _unpack(obj: Any, path: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Return (state_dict, source format, our metadata) from whatever torch.load gave."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict — pass a .pth written by training")
    if obj.get("format") == FORMAT:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        return _strip_prefix(obj["state_dict"]), FORMAT, meta
    if "model_state_dict" in obj:
        return _strip_prefix(obj["model_state_dict"]), "official-resume", {}
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return _strip_prefix(obj["state_dict"]), "state_dict-wrapper", {}
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_prefix(obj), "official-state_dict", {}
    raise CheckpointError(
        f"{path}: a dict with keys {sorted(obj)[:8]} but no model weights — expected a state_dict, "
        "a dict with 'model_state_dict', or an ultralbm-edge checkpoint"
    )


def load_checkpoint(path: Path | str, variant: str | None = None) -> Checkpoint:
    """Load any supported checkpoint file into an eval-mode model on the CPU.

    ``variant`` forces a variant; by default it is read from the file or inferred from the weights.
    Raises :class:`CheckpointError` with the missing/unexpected keys when the weights do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file — check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e)
        if "Unsupported global" in reason:
            found = reason.split("Unsupported global:", 1)[1].strip().splitlines()[0]
            raise CheckpointError(
                f"{path}: refused — it references the Python object {found}, and loading it could execute code. "
                "Re-save only the state_dict (torch.save(model.state_dict(), ...)) from a trusted environment."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or not a torch.save file)") from None
    except Exception as e:  # zip/pickle corruption, not a torch file at all
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    state_dict, source_format, meta = _unpack(obj, path)
    guessed = guess_variant(state_dict)
    variant = variant or meta.get("variant") or guessed
    if variant is None:
        raise CheckpointError(
            f"{path}: not an UltraLBM-UNet checkpoint (no 'encoder1.0.weight' of a known width; first keys: "
            f"{list(state_dict)[:5]})"
        )
    model = create_model(variant)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or wrong_shape:
        looks = f"its weights look like variant {guessed!r}" if guessed else "it does not look like any UltraLBM-UNet variant"
        raise CheckpointError(
            f"{path}: does not fit variant {variant!r} ({looks}). "
            f"missing keys ({len(missing)}): {missing[:6]}; unexpected keys ({len(unexpected)}): {unexpected[:6]}; "
            f"wrong shapes ({len(wrong_shape)}): {wrong_shape[:6]}"
        )
    model.load_state_dict(state_dict)
    model.eval()
    return Checkpoint(
        model=model,
        variant=variant,
        path=str(path),
        sha256=file_sha256(path),
        source_format=source_format,
        image_size=int(meta.get("image_size", IMAGE_SIZE)),
        threshold=float(meta.get("threshold", DEFAULT_THRESHOLD)),
        preprocessing=str(meta.get("preprocessing", PREPROCESSING_ID)),
        provenance=dict(meta.get("provenance", {})),
    )


def save_checkpoint(
    path: Path | str,
    model: UltraLBMUNet,
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
        "channels": list(model.channels),
        "image_size": int(image_size),
        "preprocessing": PREPROCESSING_ID,
        "threshold": float(threshold),
        "provenance": dict(provenance or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
