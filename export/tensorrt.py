"""TensorRT engines from exported ONNX, through one code path for standard TensorRT and TensorRT-RTX.

Both packages expose the same builder/parser API; they differ in typing. Standard TensorRT 10 is weakly typed
(precision chosen by builder flags: FP16, INT8 with an optional implicit calibrator). TensorRT 11 and TensorRT-RTX
are strongly typed: precision comes from the ONNX itself (FP16 tensors, Q/DQ nodes), so FP16 builds use the FP16
ONNX from ``export.fp16`` and INT8 builds need a Q/DQ ONNX from ``ultralbm-edge calibrate``.

Every engine gets a JSON sidecar (``<engine>.json``) recording the package and version, the target GPU
architectures, precision, optimization profile, source ONNX hash and the model metadata the runtime needs.

TensorRT-RTX builds ahead of time on a machine without a GPU (this project's CI does). Executing an engine needs a
GPU the package supports; TensorRT-RTX refuses compute capability 9.0 (H100/H200).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from ultralbm_edge.checkpoint import file_sha256
from ultralbm_edge.runtime.backends.tensorrt_backend import (
    TensorRT,
    TensorRTError,
    current_gpu,
    load_tensorrt,
    sidecar_path,
)
from ultralbm_edge.runtime.imageio import write_atomic
from ultralbm_edge.runtime.metadata import MetadataError, ModelMetadata

from .fp16 import convert_to_fp16
from .onnx_export import ORT_ONLY_SCANS, read_metadata

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class EngineResult:
    path: Path
    sidecar: dict
    seconds: float
    notes: list[str] = field(default_factory=list)


def read_onnx_metadata(path: Path) -> ModelMetadata:
    try:
        return read_metadata(path)
    except MetadataError as e:
        raise TensorRTError(str(e)) from None


def _has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def parse(trt: TensorRT, model_bytes: bytes, source: str):
    """Parse ONNX bytes into a network; a rejected operator is reported by node and op type."""
    t = trt.module
    logger = t.Logger(t.Logger.ERROR)
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
) -> EngineResult:
    """Build a TensorRT engine (and its JSON sidecar) from an exported ONNX file.

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
    output = Path(output) if output else onnx_path.with_suffix(f".{precision}.engine")
    if not output.parent.is_dir():
        raise TensorRTError(f"output directory {output.parent} does not exist — create it first or choose another -o")
    meta = read_onnx_metadata(onnx_path)
    trt = load_tensorrt(package)
    t = trt.module
    model = onnx.load(str(onnx_path))
    notes: list[str] = []
    qdq = _has_qdq(model)
    calibrate_implicitly = precision == "int8" and implicit_calibration is not None and not qdq
    if trt.strongly_typed_only:
        if implicit_calibration is not None:
            raise TensorRTError(f"{trt.package} {trt.version} is strongly typed: no implicit INT8 calibration — run "
                                "`ultralbm-edge calibrate` and build from the Q/DQ ONNX")
        if precision == "int8" and not qdq:
            raise TensorRTError(
                f"{onnx_path}: {trt.package} {trt.version} is strongly typed and takes INT8 only from Q/DQ nodes — "
                "run `ultralbm-edge calibrate MODEL.onnx --images DIR` first and build from its output"
            )
        if precision == "fp16" and meta.precision != "fp16":
            model = convert_to_fp16(model)
            notes.append("converted to FP16 internals for the strongly typed builder (scan, norms, sigmoid in FP32)")
        if precision == "fp32" and (qdq or meta.precision == "fp16"):
            raise TensorRTError(f"{onnx_path}: holds {'Q/DQ' if qdq else 'FP16'} types; an fp32 engine needs the FP32 export")
    try:
        builder, network, _parser, _logger = parse(trt, model.SerializeToString(), str(onnx_path))
    except TensorRTError as e:
        if meta.scan_strategy in ORT_ONLY_SCANS:
            raise TensorRTError(
                f"{e} — this file was exported for ONNX Runtime (scan {meta.scan_strategy}); re-export it for TensorRT "
                "with `ultralbm-edge export CHECKPOINT --target tensorrt` (or `--engine`)"
            ) from None
        raise
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(t.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if not trt.strongly_typed_only:
        if precision in ("fp16", "int8"):
            config.set_flag(t.BuilderFlag.FP16)  # INT8 layers fall back to FP16 where INT8 has no kernel
        if precision == "int8":
            if not qdq and implicit_calibration is None:
                raise TensorRTError("INT8 needs a Q/DQ ONNX (`ultralbm-edge calibrate`) or calibration images (--calib DIR)")
            if not builder.platform_has_fast_int8:
                raise TensorRTError("this GPU has no fast INT8 support — build fp16 instead")
            config.set_flag(t.BuilderFlag.INT8)
    inp = network.get_input(0)
    fixed = inp.shape[0]
    profile = None
    if fixed == -1:
        lo, hi = min_batch or 1, max_batch or 8
        opt = opt_batch or hi
        if not lo <= opt <= hi:
            raise TensorRTError(f"batch profile must satisfy min <= opt <= max, got {lo}/{opt}/{hi}")
        size = meta.image_size
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (lo, 3, size, size), (opt, 3, size, size), (hi, 3, size, size))
        config.add_optimization_profile(profile)
        if calibrate_implicitly:
            config.set_calibration_profile(profile)  # calibration runs at the profile's OPT batch
        profile = {"min": lo, "opt": opt, "max": hi}
    elif any(b is not None for b in (min_batch, opt_batch, max_batch)):
        notes.append(f"the ONNX has a fixed batch of {fixed}; --min/--opt/--max ignored (export with --dynamic-batch)")
    if calibrate_implicitly:
        from ultralbm_edge.calibration.implicit import entropy_calibrator

        calib_batch = profile["opt"] if profile else fixed
        cache_path = output.with_name(output.name + ".calib.cache")
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
        data = bytes(config.get_timing_cache().serialize())
        write_atomic(timing_cache, lambda tmp: tmp.write_bytes(data))
    sidecar = {
        "format": "ultralbm-edge-engine/1",
        "tensorrt_package": trt.package,
        "tensorrt_version": trt.version,
        "built_on_gpu": _gpu_name(),
        "compute_capabilities": _compute_capabilities(config) or ("all supported by the package" if trt.package == "tensorrt_rtx" else "the build GPU"),
        "precision": precision,
        "strongly_typed": trt.strongly_typed_only,
        "batch": profile or {"fixed": fixed},
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": file_sha256(onnx_path),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "metadata": {**meta.to_json(), "precision": precision},
        "notes": notes,
    }
    write_atomic(output, lambda tmp: tmp.write_bytes(engine_bytes))
    write_atomic(sidecar_path(output), lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2) + "\n"))
    return EngineResult(output, sidecar, time.perf_counter() - started, notes)


def _compute_capabilities(config) -> list[str]:
    n = getattr(config, "num_compute_capabilities", 0)
    return [str(config.get_compute_capability(i)).split(".")[-1] for i in range(n)]


def _gpu_name() -> str:
    """The GPU the engine was built on, when there is one (TensorRT-RTX also builds without)."""
    try:
        name, (major, minor) = current_gpu()
    except TensorRTError as e:
        return f"none ({e})"
    return f"{name} (sm_{major}{minor})"


@dataclass
class CompatibilityReport:
    package: str
    version: str
    parsed: bool
    built: bool
    seconds: float
    engine_bytes: int
    error: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def check_tensorrt(onnx_path: str | Path, precision: str = "fp32", package: str = "auto") -> CompatibilityReport:
    """Parse and build ``onnx_path`` ahead of time, without keeping the engine: the CI compatibility check."""
    onnx_path = Path(onnx_path)
    trt = load_tensorrt(package)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = build_engine(onnx_path, Path(tmp) / "check.engine", precision=precision, package=package)
        except TensorRTError as e:
            parsed = "rejected the model" not in str(e)
            return CompatibilityReport(trt.package, trt.version, parsed, False, time.perf_counter() - started, 0, str(e))
        size = os.path.getsize(result.path)
    return CompatibilityReport(trt.package, trt.version, True, True, time.perf_counter() - started, size)
