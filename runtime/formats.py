"""The format table: every model file format the toolkit writes or runs, in one place.

``open_backend`` reads it to pick a backend from a file's suffix; the exporters read it to name their outputs and
to say which extra a format needs. A new runtime is one backend module plus one row here; a new export target is
one converter module plus one row here. Backends and exporters are named by import path ("module:attribute") and
imported only when used, so this table costs nothing to import and pulls in neither torch nor any runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

# The graph's tensor names, shared by every exporter and backend.
INPUT_NAME = "image"  # float32 (N, 3, S, S), values in [0, 255] after the official preprocessing
OUTPUT_NAME = "prob"  # float32 (N, 1, S, S), sigmoid probabilities


@dataclass(frozen=True)
class Format:
    name: str  # what --format / --backend call it
    suffixes: tuple[str, ...]  # the first is what exporters write
    backend: str  # "module:class" of the backend that runs it
    install: str  # how to get its runtime when it is missing
    exporter: str | None = None  # "module:function" that writes it from a checkpoint (None: written by training)
    description: str = ""
    dynamic_batch: bool = True  # whether its exporter can write a graph with a dynamic batch (else a fixed --batch)


FORMATS: tuple[Format, ...] = (
    Format(
        "onnxruntime", (".onnx",), "ultralbm_edge.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
        "pip install ultralbm-edge", "ultralbm_edge.export.onnx_export:export_onnx",
        "ONNX (stock operators), run by ONNX Runtime on CPU or its GPU providers",
    ),
    Format(
        "tensorrt", (".engine", ".plan"), "ultralbm_edge.runtime.backends.tensorrt_backend:TensorRTBackend",
        "pip install 'ultralbm-edge[tensorrt]' (or [rtx] on RTX PCs)", "ultralbm_edge.export.pipeline:export_engine",
        "TensorRT / TensorRT-RTX engine with a JSON sidecar, built from the ONNX",
    ),
    Format(
        "openvino", (".xml",), "ultralbm_edge.runtime.backends.openvino_backend:OpenVinoBackend",
        "pip install 'ultralbm-edge[openvino]'", "ultralbm_edge.export.openvino:export",
        "OpenVINO IR (.xml + .bin, f32) converted from the exported ONNX; --backend openvino also runs .onnx",
    ),
    Format(
        "litert", (".tflite",), "ultralbm_edge.runtime.backends.litert_backend:LiteRTBackend",
        "pip install 'ultralbm-edge[litert]'", "ultralbm_edge.export.litert:export",
        "LiteRT (TensorFlow Lite) flatbuffer converted from PyTorch by litert-torch ([litert-export]); fixed batch",
        dynamic_batch=False,
    ),
    Format(
        "torch", (".pth", ".pt"), "ultralbm_edge.torch_backend:TorchBackend",
        "pip install 'ultralbm-edge[torch]'", None,
        "PyTorch checkpoint (training output; the authors' formats load unchanged)",
    ),
)  # fmt: skip


class UnknownFormat(UserError, ValueError):
    """A file whose suffix no format claims, or a format name nobody registered."""


def format_named(name: str) -> Format:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise UnknownFormat(f"unknown backend {name!r}; choose one of {('auto', *format_names())}")


def format_names() -> tuple[str, ...]:
    return tuple(f.name for f in FORMATS)


def format_for(path: Path) -> Format:
    suffix = path.suffix.lower()
    for fmt in FORMATS:
        if suffix in fmt.suffixes:
            return fmt
    known = ", ".join(s for f in FORMATS for s in f.suffixes)
    raise UnknownFormat(f"{path}: cannot tell the format from the suffix {path.suffix!r} — use {known}, or --backend")
