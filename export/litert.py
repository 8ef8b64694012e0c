"""Export target ``litert``: a checkpoint -> a LiteRT (TensorFlow Lite) flatbuffer, for phones and embedded boards.

Converted from PyTorch by litert-torch (``pip install 'ultralbm-edge[litert-export]'``: heavy, it brings jax and
the converter) with a traced scan strategy (``blelloch`` by default: exact, and the quickest to convert), then
checked for parity on the LiteRT interpreter (``[litert]``: ai-edge-litert and numpy, no torch) before it is kept.
The model metadata is stored in the flatbuffer as the metadata entry ``ultralbm_edge`` (JSON).

The graph has a fixed batch (``batch``, 1 by default): ``Backend.run`` feeds larger batches as several calls of
that size. A dynamic batch is refused rather than faked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ultralbm_edge.checkpoint import Checkpoint
from ultralbm_edge.ops import scan_strategies
from ultralbm_edge.runtime.files import atomic_path

from .errors import ExportError
from .onnx_export import ExportResult, check_shape_and_outputs, open_checkpoint, parity_inputs, verify_on_runtimes

AUTO_SCAN = "blelloch"


def with_metadata(tflite: bytes, name: str, payload: bytes) -> bytes:
    """``tflite`` with one more metadata entry ``name`` holding ``payload`` (the flatbuffer rebuilt)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(tflite, 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [m for m in model.metadata or [] if m.name not in (name, name.encode())] + [entry]
    builder = flatbuffers.Builder(len(tflite) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def export(
    checkpoint: Checkpoint | str | Path,
    output: str | Path,
    *,
    scan: str = "auto",
    image_size: int = 256,
    batch: int = 1,
    dynamic_batch: bool = False,
    check: bool = True,
    parity_images: str | Path | None = None,
    parity_count: int = 10,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``output`` (.tflite) for a fixed ``batch``; refused unless LiteRT's outputs pass parity."""
    try:
        import litert_torch

        from ultralbm_edge.runtime.backends.litert_backend import METADATA_NAME, LiteRTBackend, operator_count
    except ImportError as e:
        raise ExportError(f"exporting to LiteRT needs litert-torch ({e}) — pip install 'ultralbm-edge[litert-export]'") from None
    started = time.perf_counter()
    output = Path(output)
    scan = AUTO_SCAN if scan == "auto" else scan
    if scan not in scan_strategies():
        raise ExportError(f"--scan {scan}: LiteRT models are converted from PyTorch with a traced strategy; choose auto or one of {scan_strategies()}")
    if dynamic_batch:
        raise ExportError("LiteRT export has a fixed batch: pass --batch N instead of --dynamic-batch (larger batches run as several calls)")
    ckpt = open_checkpoint(checkpoint)
    check_shape_and_outputs([output], ckpt.path, image_size, batch, overwrite)
    model = ckpt.model.eval()
    meta = ckpt.metadata(image_size=image_size, scan_strategy=scan, precision="fp32")
    with torch.no_grad(), model.using_scan(scan):
        converted = litert_torch.convert(model, (torch.zeros(batch, 3, image_size, image_size),))
    reports = []
    with atomic_path(output) as tmp:
        converted.export(str(tmp))
        data = with_metadata(tmp.read_bytes(), METADATA_NAME, json.dumps(meta.to_json()).encode())
        tmp.write_bytes(data)
        if check:
            images = parity_inputs(parity_images, parity_count, image_size)
            label = f"LiteRT {LiteRTBackend.runtime_version()} CPU"
            reports = verify_on_runtimes(output, [(label, lambda: LiteRTBackend(tmp))], model, images, ckpt.threshold)
    return ExportResult(output, meta, time.perf_counter() - started, operator_count(data), reports[0] if reports else None, reports)
