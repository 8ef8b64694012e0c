"""LiteRT backend (TensorFlow Lite flatbuffers, ``.tflite``): ``ai_edge_litert``'s interpreter on the CPU
(XNNPACK), numpy only: what a phone or an embedded board runs. ``pip install 'ultralbm-edge[litert]'``.

The model metadata travels inside the flatbuffer as a metadata entry named ``ultralbm_edge`` (JSON), written by
the exporter (``export/litert.py``). LiteRT graphs have a fixed batch (the exporter's ``--batch``, 1 by default);
``Backend.run`` feeds larger batches as several calls.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from ..metadata import MetadataError, ModelMetadata
from .base import Backend, BackendError, parse_device

METADATA_NAME = "ultralbm_edge"  # the flatbuffer metadata entry holding ModelMetadata as JSON


def operator_count(data: bytes) -> int:
    """Operators in the flatbuffer's subgraphs (what the export reports as its node count)."""
    model = schema.Model.GetRootAs(data, 0)
    return sum(model.Subgraphs(i).OperatorsLength() for i in range(model.SubgraphsLength()))


def read_tflite_metadata(data: bytes, source: str) -> ModelMetadata:
    """The ModelMetadata stored in a .tflite flatbuffer's ``ultralbm_edge`` metadata entry."""
    try:
        model = schema.Model.GetRootAs(data, 0)
        entries = [model.Metadata(i) for i in range(model.MetadataLength())]
        entry = next((m for m in entries if m.Name() == METADATA_NAME.encode()), None)
        if entry is not None:
            buffer = model.Buffers(entry.Buffer())
            offset = buffer.Offset()
            payload = data[offset : offset + buffer.Size()] if offset > 1 else buffer.DataAsNumpy().tobytes()
    except Exception as e:  # noqa: BLE001 - flatbuffers raises struct/index errors on foreign bytes
        raise MetadataError(f"{source}: not a readable .tflite flatbuffer ({type(e).__name__}) — pass a model exported by `ultralbm-edge export`") from None
    if entry is None:
        raise MetadataError(
            f"{source}: has no ultralbm-edge metadata (not exported by `ultralbm-edge export`) — re-export it from its "
            "checkpoint with `ultralbm-edge export -m CHECKPOINT -o model.tflite`"
        )
    try:
        return ModelMetadata.from_json(json.loads(bytes(payload).decode()), source=source)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetadataError(f"{source}: its ultralbm-edge metadata is not valid JSON ({e}) — re-export the model") from None


class LiteRTBackend(Backend):
    name = "litert"
    fixed_batch = True

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None) -> None:
        self.path = Path(path)
        if parse_device(device)[0] != "cpu":
            raise BackendError(f"{self.path}: the LiteRT backend runs on the CPU; use --device cpu or another backend")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise BackendError(f"{self.path}: cannot read it ({e.strerror})") from None
        try:
            self.metadata = read_tflite_metadata(data, str(self.path))
        except MetadataError as e:
            raise BackendError(str(e)) from None
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError with LiteRT's text
            raise BackendError(f"{self.path}: LiteRT cannot load this model ({type(e).__name__}: {str(e)[:300]})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        size = self.metadata.image_size
        if len(inputs) != 1 or list(inputs[0]["shape"][1:]) != [3, size, size] or inputs[0]["dtype"] != np.float32:
            raise BackendError(
                f"{self.path}: expected one float32 input of shape [N, 3, {size}, {size}], the model has "
                f"{[(list(i['shape']), np.dtype(i['dtype']).name) for i in inputs]} — re-export it with `ultralbm-edge export`"
            )
        if len(outputs) != 1 or list(outputs[0]["shape"][1:]) != [1, size, size]:
            raise BackendError(f"{self.path}: expected one output of shape [N, 1, {size}, {size}], the model has {[list(o['shape']) for o in outputs]}")
        self._input, self._output = inputs[0]["index"], outputs[0]["index"]
        self.max_batch = int(inputs[0]["shape"][0])

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output)  # a copy

    @staticmethod
    def runtime_version() -> str:
        from importlib.metadata import version

        return version("ai-edge-litert")

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "ai-edge-litert": self.runtime_version(),
            "providers": "CPU (XNNPACK)",
            "device": platform.processor() or platform.machine(),
        }
