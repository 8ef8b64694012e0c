"""TensorRT engines from exported ONNX, through one code path for standard TensorRT and TensorRT-RTX (torch-free).

Both packages expose the same builder/parser API; they differ in typing. Standard TensorRT 10 is weakly typed
(precision chosen by builder flags: FP16, INT8 with an optional implicit calibrator). TensorRT 11 and TensorRT-RTX
are strongly typed: precision comes from the ONNX itself (FP16 tensors, Q/DQ nodes), so FP16 builds use the FP16
ONNX from ``export.fp16`` and INT8 builds need a Q/DQ ONNX from ``ultralbm-edge calibrate``.

The build is a chain of small steps, as Polygraphy's loaders: ``typed_source`` (what the builder's typing needs of
the ONNX), ``parse``, ``builder_config``, ``batch_profile``, then ``build_engine`` runs them and writes the engine
with a JSON sidecar (``<engine>.json``) recording the package and version, the target GPU architectures,
precision, optimization profile, source ONNX hash and the model metadata the runtime needs.
``engine_from_onnx`` puts INT8 calibration in front when it is asked for.

TensorRT-RTX builds ahead of time on a machine without a GPU (this project's CI does). Executing an engine needs a
GPU the package supports; TensorRT-RTX refuses compute capability 9.0 (H100/H200).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from ultralbm_edge.runtime.files import OutputError, check_output, file_sha256, write_bytes_atomic, write_text_atomic
from ultralbm_edge.runtime.verbosity import verbose
from ultralbm_edge.runtime.metadata import PRECISIONS, MetadataError, ModelMetadata, read_onnx_metadata
from ultralbm_edge.runtime.backends.tensorrt_env import TensorRT, TensorRTError, gpu_description, load_tensorrt, sidecar_path

from .fp16 import convert_to_fp16
from .scan_policy import ORT_ONLY_SCANS

SIDECAR_FORMAT = "ultralbm-edge-engine/1"


@dataclass
class EngineResult:
    path: Path
    sidecar: dict
    seconds: float
    notes: list[str] = field(default_factory=list)
    source: Path | None = None  # the ONNX the engine was built from (a Q/DQ copy when INT8 was calibrated first)


@dataclass
class BatchProfile:
    min: int | None = None
    opt: int | None = None
    max: int | None = None


def _has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def typed_source(trt: TensorRT, model: onnx.ModelProto, meta: ModelMetadata, precision: str, source: Path,
                 implicit_calibration: bool) -> tuple[onnx.ModelProto, list[str]]:  # fmt: skip
    """The ONNX the builder gets: on strongly typed TensorRT, precision must be in the graph's types."""
    notes: list[str] = []
    if not trt.strongly_typed_only:
        return model, notes
    qdq = _has_qdq(model)
    if implicit_calibration:
        raise TensorRTError(f"{trt.package} {trt.version} is strongly typed: no implicit INT8 calibration — run "
                            "`ultralbm-edge calibrate` and build from the Q/DQ ONNX")
    if precision == "int8" and not qdq:
        raise TensorRTError(
            f"{source}: {trt.package} {trt.version} is strongly typed and takes INT8 only from Q/DQ nodes — "
            "run `ultralbm-edge calibrate MODEL.onnx --images DIR` first and build from its output"
        )
    if precision == "fp16" and meta.precision != "fp16":
        model = convert_to_fp16(model, meta.fp32_scopes)
        notes.append("converted to FP16 internals for the strongly typed builder (scan, norms, sigmoid in FP32)")
    if precision == "fp32" and (qdq or meta.precision == "fp16"):
        raise TensorRTError(f"{source}: holds {'Q/DQ' if qdq else 'FP16'} types; an fp32 engine needs the FP32 export")
    return model, notes


def parse(trt: TensorRT, model_bytes: bytes, source: str):
    """Parse ONNX bytes into a network; a rejected operator is reported by node and op type."""
    t = trt.module
    logger = t.Logger(t.Logger.INFO if verbose() else t.Logger.ERROR)
    builder = t.Builder(logger)
    flags = 1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if trt.strongly_typed_only else 0
    network = builder.create_network(flags)
    parser = t.OnnxParser(network, logger)
    if not parser.parse(model_bytes):
        problems = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            node = err.node_name() if hasattr(err, "node_name") else ""
            op = err.node_operator() if hasattr(err, "node_operator") else ""
            problems.append(f"node {node or err.node()} ({op or '?'}): {err.desc()}")
        raise TensorRTError(f"{source}: {trt.package} {trt.version} rejected the model — " + "; ".join(problems))
    return builder, network, parser, logger


def builder_config(trt: TensorRT, builder, precision: str, qdq: bool, implicit_calibration: bool, workspace_mb: int | None):
    """Builder flags for ``precision`` (weakly typed TensorRT only: strongly typed builds take the graph's types)."""
    t = trt.module
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(t.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if trt.strongly_typed_only or precision == "fp32":
        return config
    config.set_flag(t.BuilderFlag.FP16)  # INT8 layers fall back to FP16 where INT8 has no kernel
    if precision == "int8":
        if not qdq and not implicit_calibration:
            raise TensorRTError("INT8 needs a Q/DQ ONNX (`ultralbm-edge calibrate`) or calibration images (--calib DIR)")
        if not builder.platform_has_fast_int8:
            raise TensorRTError("this GPU has no fast INT8 support — build fp16 instead")
        config.set_flag(t.BuilderFlag.INT8)
    return config


def batch_profile(builder, network, config, image_size: int, batch: BatchProfile) -> tuple[dict[str, int], Any, list[str]]:
    """The optimization profile of a dynamic-batch network (min/opt/max, defaults 1/max/8), or its fixed batch."""
    inp = network.get_input(0)
    fixed = inp.shape[0]
    if fixed != -1:
        notes = []
        if any(b is not None for b in (batch.min, batch.opt, batch.max)):
            notes.append(f"the ONNX has a fixed batch of {fixed}; --min/--opt/--max ignored (export with --dynamic-batch)")
        return {"fixed": fixed}, None, notes
    lo, hi = batch.min or 1, batch.max or 8
    opt = batch.opt or hi
    if not lo <= opt <= hi:
        raise TensorRTError(f"batch profile must satisfy min <= opt <= max, got {lo}/{opt}/{hi}")
    profile = builder.create_optimization_profile()
    shape = (3, image_size, image_size)
    profile.set_shape(inp.name, (lo, *shape), (opt, *shape), (hi, *shape))
    config.add_optimization_profile(profile)
    return {"min": lo, "opt": opt, "max": hi}, profile, []


def engine_path(onnx_path: Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.<precision>.engine``, named once: ``model.int8.onnx`` (a Q/DQ copy) -> ``model.int8.engine``."""
    stem = onnx_path.name[: -len(onnx_path.suffix)] if onnx_path.suffix else onnx_path.name
    return onnx_path.with_name(stem + (".engine" if stem.endswith(f".{precision}") else f".{precision}.engine"))


def _compute_capabilities(config) -> list[str]:
    n = getattr(config, "num_compute_capabilities", 0)
    return [str(config.get_compute_capability(i)).split(".")[-1] for i in range(n)]


def build_engine(
    onnx_path: str | Path,
    output: str | Path | None = None,
    *,
    precision: str = "fp32",
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    workspace_mb: int | None = None,
    timing_cache: str | Path | None = None,
    package: str = "auto",
    implicit_calibration: str | Path | None = None,
    overwrite: bool = False,
) -> EngineResult:
    """Build a TensorRT engine (and its JSON sidecar) from an exported ONNX file (an existing engine is replaced only
    with ``overwrite``, never if it is the ONNX itself).

    ``precision``: fp32, fp16 or int8. On strongly typed TensorRT (RTX, >= 11) fp16 converts the ONNX to FP16
    internals (scan, norms, sigmoid kept FP32) and int8 requires a Q/DQ ONNX; on TensorRT 10 the builder flags are
    used, and ``implicit_calibration`` (a folder of images) calibrates an FP32 ONNX inside the builder
    (IInt8EntropyCalibrator2, cache ``<engine>.calib.cache``). A dynamic-batch ONNX gets an optimization profile
    min/opt/max (defaults 1/max/8).
    """
    started = time.perf_counter()
    onnx_path = Path(onnx_path)
    if precision not in PRECISIONS:
        raise TensorRTError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if not onnx_path.is_file():
        raise TensorRTError(f"{onnx_path}: no such ONNX file — export one with `ultralbm-edge export`")
    output = Path(output) if output else engine_path(onnx_path, precision)
    try:
        for path in (output, sidecar_path(output)):
            check_output(path, inputs=[onnx_path], overwrite=overwrite)
    except OutputError as e:
        raise TensorRTError(str(e)) from None
    try:
        meta = read_onnx_metadata(onnx_path)
    except MetadataError as e:
        raise TensorRTError(str(e)) from None
    trt = load_tensorrt(package)
    model = onnx.load(str(onnx_path))
    qdq = _has_qdq(model)
    implicit = precision == "int8" and implicit_calibration is not None and not qdq
    model, notes = typed_source(trt, model, meta, precision, onnx_path, implicit_calibration is not None)
    try:
        builder, network, _parser, _logger = parse(trt, model.SerializeToString(), str(onnx_path))
    except TensorRTError as e:
        if meta.scan_strategy in ORT_ONLY_SCANS:
            raise TensorRTError(
                f"{e} — this file was exported for ONNX Runtime (scan {meta.scan_strategy}); re-export it for TensorRT "
                "with `ultralbm-edge export -m CHECKPOINT --target tensorrt` (or `--engine`)"
            ) from None
        raise
    config = builder_config(trt, builder, precision, qdq, implicit, workspace_mb)
    batch, profile, batch_notes = batch_profile(builder, network, config, meta.image_size, BatchProfile(min_batch, opt_batch, max_batch))
    notes += batch_notes
    if implicit:
        from ultralbm_edge.calibration.tensorrt_calibrator import entropy_calibrator

        if profile is not None:
            config.set_calibration_profile(profile)  # calibration runs at the profile's OPT batch
        cache_path = output.with_name(output.name + ".calib.cache")
        calib_batch = batch.get("opt", batch.get("fixed"))
        config.int8_calibrator = entropy_calibrator(trt, implicit_calibration, cache_path, calib_batch, meta.image_size)
        notes.append(f"implicit INT8 calibration (IInt8EntropyCalibrator2) on {implicit_calibration}, cache {cache_path.name}")
    cache = None
    if timing_cache:
        timing_cache = Path(timing_cache)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"{onnx_path}: {trt.package} {trt.version} could not build a {precision} engine (see the log above)")
    engine_bytes = bytes(serialized)
    if cache is not None:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    sidecar = {
        "format": SIDECAR_FORMAT,
        "tensorrt_package": trt.package,
        "tensorrt_version": trt.version,
        "built_on_gpu": gpu_description(),
        "compute_capabilities": _compute_capabilities(config) or ("all supported by the package" if trt.package == "tensorrt_rtx" else "the build GPU"),
        "precision": precision,
        "strongly_typed": trt.strongly_typed_only,
        "batch": batch,
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": file_sha256(onnx_path),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "metadata": {**meta.to_json(), "precision": precision},
        "notes": notes,
    }
    write_bytes_atomic(output, engine_bytes)
    write_text_atomic(sidecar_path(output), json.dumps(sidecar, indent=2) + "\n")
    return EngineResult(output, sidecar, time.perf_counter() - started, notes, onnx_path)


def engine_from_onnx(
    onnx_path: str | Path,
    output: str | Path | None = None,
    *,
    precision: str = "fp32",
    calib: str | Path | None = None,
    implicit: bool = False,
    overwrite: bool = False,
    **options: Any,
) -> EngineResult:
    """``build_engine``, calibrating first when INT8 is asked of an FP32 ONNX with images ``calib``: a Q/DQ ONNX
    (``calibration.quantize_int8``; the result's ``source``), or inside the TensorRT 10 builder with ``implicit``.
    The engine is named after ``onnx_path`` (``<model>.<precision>.engine``), not after the Q/DQ copy."""
    from ultralbm_edge.calibration import quantize_int8

    onnx_path = Path(onnx_path)
    output = Path(output) if output else engine_path(onnx_path, precision)
    source = onnx_path
    if precision == "int8" and calib is not None and implicit:
        options["implicit_calibration"] = calib
    elif precision == "int8" and calib is not None:
        source = quantize_int8(onnx_path, calib, overwrite=overwrite).path
    return build_engine(source, output, precision=precision, overwrite=overwrite, **options)
