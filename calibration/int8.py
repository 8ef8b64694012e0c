"""INT8 by explicit quantization: a Q/DQ ONNX calibrated on dermoscopy images with ONNX Runtime's tools.

The Q/DQ model runs on ONNX Runtime CPU (so its accuracy is measurable anywhere) and is what strongly typed
TensorRT (11, RTX) and TensorRT 10 take for INT8 engines. Quantized: the dense convolutions and linear layers
outside the Mamba blocks (symmetric INT8, per-channel weights — TensorRT's requirement). Kept in FP32, because
quantizing them costs accuracy or has no INT8 kernel:
- the node scopes the model's metadata keeps FP32 (``fp32_scopes``: the Mamba blocks' x_proj/dt_proj, softplus,
  exp(dt*A), the scan's decay products),
- the scopes it leaves unquantized (``unquantized_scopes``: the first convolution, which sees raw image
  statistics, and the head, whose output is the probability map itself),
- depthwise convolutions (TensorRT's INT8 grouped conv wants group sizes divisible by 4; ours have 1 channel/group),
- Layer/Group norms (not in the quantized op types).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ultralbm_edge.runtime.dataset import DatasetError, load_images
from ultralbm_edge.runtime.errors import UserError
from ultralbm_edge.runtime.files import OutputError, atomic_path, check_output
from ultralbm_edge.runtime.formats import INPUT_NAME
from ultralbm_edge.runtime.metadata import MetadataError, ModelMetadata

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


class CalibrationError(UserError, ValueError):
    """Calibration cannot run as asked; the message says what to change."""


@dataclass
class CalibrationResult:
    path: Path
    n_images: int
    method: str
    quantized_nodes: int
    excluded_nodes: int
    seconds: float
    skipped_images: list[str]


class DermoscopyReader(CalibrationDataReader):
    """Feeds preprocessed real images to the calibrator in the model's batch size."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def calibration_images(folder: Path, num_images: int, size: int, progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, list[str]]:
    """Preprocess the first ``num_images`` readable images of ``folder`` (sorted, recursive)."""
    try:
        batch = load_images(folder, num_images, size, progress)
    except DatasetError as e:
        raise CalibrationError(str(e)) from None
    if len(batch.paths) < num_images:
        raise CalibrationError(
            f"{folder}: only {len(batch.paths)} readable images, fewer than --num-images {num_images} — "
            f"add images or pass --num-images {len(batch.paths)}"
        )
    return batch.images, batch.skipped


def _excluded_nodes(model: onnx.ModelProto, meta: ModelMetadata) -> list[str]:
    scopes = [*meta.fp32_scopes, *meta.unquantized_scopes]
    excluded = []
    for node in model.graph.node:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if any(s in node.name for s in scopes) or (node.op_type == "Conv" and groups > 1):
            excluded.append(node.name)
    return excluded


def quantize_int8(
    onnx_path: str | Path,
    images: str | Path,
    output: str | Path | None = None,
    *,
    method: str = "percentile",
    num_images: int = 256,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    quiet: bool = True,
) -> CalibrationResult:
    """Write a Q/DQ INT8 copy of ``onnx_path`` (default ``<model>.int8.onnx``) calibrated on ``num_images`` images
    from ``images``; an existing output is replaced only with ``overwrite``, never if it is the input."""
    started = time.perf_counter()
    onnx_path = Path(onnx_path)
    if method not in METHODS:
        raise CalibrationError(f"unknown --method {method!r}; choose one of {sorted(METHODS)}")
    if not onnx_path.is_file():
        raise CalibrationError(f"{onnx_path}: no such ONNX file — export one with `ultralbm-edge export`")
    model = onnx.load(str(onnx_path))
    try:
        meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, source=str(onnx_path))
    except MetadataError as e:
        raise CalibrationError(str(e)) from None
    if meta.precision != "fp32":
        raise CalibrationError(f"{onnx_path}: is {meta.precision}; calibrate the FP32 export")
    output = Path(output) if output else onnx_path.with_name(onnx_path.stem + ".int8.onnx")
    try:
        check_output(output, inputs=[onnx_path], overwrite=overwrite)
    except OutputError as e:
        raise CalibrationError(str(e)) from None
    data, skipped = calibration_images(Path(images), num_images, meta.image_size, progress)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else 8
    batches = [data[i : i + batch] for i in range(0, len(data) - len(data) % batch or len(data), batch)]
    excluded = _excluded_nodes(model, meta)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        # ONNX Runtime's calibrators print their steps ("Collecting tensor data ..."); ``quiet`` keeps them off stdout.
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            quantize_static(
                str(prepared),
                str(Path(tmp) / "int8.onnx"),
                DermoscopyReader(batches),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=QUANTIZED_OPS,
                nodes_to_exclude=excluded,
                calibrate_method=METHODS[method],
                # TensorRT dequantizes only 8-bit (and FP8/4-bit) tensors: biases stay FP32, not INT32.
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
        quantized = onnx.load(str(Path(tmp) / "int8.onnx"))
    meta.precision = "int8"
    meta.extra = {**meta.extra, "calibration": {"method": method, "images": len(data), "source": str(images)}}
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, meta.to_props())
    with atomic_path(output) as tmp_out:
        onnx.save(quantized, str(tmp_out))
    n_q = sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    return CalibrationResult(output, len(data), method, n_q, len(excluded), time.perf_counter() - started, skipped)
