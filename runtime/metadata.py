"""Model metadata that travels inside every model file, so a model is self-describing.

Export writes it into the ONNX file's ``metadata_props``; engine builds copy it into the engine's JSON sidecar;
the runtime reads it to configure preprocessing and the threshold, and refuses models whose preprocessing it
does not implement. It also carries the model's *deployment facts* from the model registry (which ONNX node
scopes must stay FP32, which layers INT8 must not quantize), so the torch-free tools (calibration, FP16
conversion, engine builds) never need the model's code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError
from .preprocess import IMAGE_SIZE, PREPROCESSING_ID

METADATA_PREFIX = "ultralbm."
# The network downsamples five times by 2; above 1024 a single image costs gigabytes at no gain in accuracy.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024
PRECISIONS = ("fp32", "fp16", "int8")


class MetadataError(UserError, ValueError):
    """A model file lacks our metadata or asks for something this runtime cannot do."""


@dataclass
class ModelMetadata:
    variant: str = "ultralbm"  # the model's registry name
    channels: list[int] = field(default_factory=lambda: [8, 16, 24, 32, 48, 64])
    image_size: int = IMAGE_SIZE
    preprocessing: str = PREPROCESSING_ID
    threshold: float = 0.5
    toolkit_version: str = ""
    source_checkpoint_sha256: str = ""
    scan_strategy: str = ""
    precision: str = "fp32"
    # ONNX node-name fragments kept in FP32 in FP16 and INT8 models (the Mamba blocks: softplus, exp, scan).
    fp32_scopes: list[str] = field(default_factory=lambda: ["/mamba/"])
    # ONNX node-name fragments INT8 leaves unquantized (the first conv sees raw pixels, the head is the output).
    unquantized_scopes: list[str] = field(default_factory=lambda: ["/encoder1/", "/final/"])
    extra: dict[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        """Flat string key/values for ONNX ``metadata_props`` (every key prefixed ``ultralbm.``)."""
        return {METADATA_PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> "ModelMetadata":
        known = {f.name for f in fields(cls)}
        values = {k[len(METADATA_PREFIX) :]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}
        if "variant" not in values:
            raise MetadataError(
                f"{source}: has no ultralbm-edge metadata (not exported by `ultralbm-edge export`) — "
                "re-export it from its checkpoint with `ultralbm-edge export -m CHECKPOINT`"
            )
        try:
            meta = cls(**{k: json.loads(v) for k, v in values.items() if k in known})
        except json.JSONDecodeError as e:
            raise MetadataError(f"{source}: its ultralbm-edge metadata is not valid JSON ({e}) — re-export the model") from None
        meta.validate(source)
        return meta

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "model") -> "ModelMetadata":
        known = {f.name for f in fields(cls)}
        meta = cls(**{k: v for k, v in data.items() if k in known})
        meta.validate(source)
        return meta

    def validate(self, source: str) -> None:
        """Refuse what would make masks silently wrong or the run explode: a foreign preprocessing, a threshold that
        is not a probability strictly between 0 and 1, an image size that is not a sane whole number."""
        remedy = "re-export the model from its checkpoint with `ultralbm-edge export`"
        if self.preprocessing != PREPROCESSING_ID:
            raise MetadataError(
                f"{source}: expects preprocessing {self.preprocessing!r}, this runtime implements {PREPROCESSING_ID!r} — "
                "upgrade ultralbm-edge or re-export the model"
            )
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0.0 < self.threshold < 1.0:
            raise MetadataError(f"{source}: threshold {self.threshold!r} is not a number strictly between 0 and 1 — {remedy}")
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE or size % 32:
            raise MetadataError(
                f"{source}: image size {size!r} is not a multiple of 32 between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} — {remedy}"
            )
        if not isinstance(self.variant, str) or not self.variant:
            raise MetadataError(f"{source}: model name {self.variant!r} is not a name — {remedy}")
        if self.precision not in PRECISIONS:
            raise MetadataError(f"{source}: precision {self.precision!r} is not one of {PRECISIONS} — {remedy}")


def read_onnx_metadata(path: Path | str) -> ModelMetadata:
    """The ModelMetadata stored in an ONNX file, read without loading its weights into a session."""
    import onnx  # torch-free, but heavy: only the tools that inspect ONNX files need it

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, a missing file, a folder: not a model we can read
        raise MetadataError(f"{path}: not a readable ONNX file ({type(e).__name__}) — pass a model exported by `ultralbm-edge export`") from None
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, source=str(path))
