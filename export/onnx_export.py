"""``export_onnx``: an UltraLBM-UNet checkpoint -> a self-describing ONNX file that stock ONNX Runtime and
TensorRT run without custom ops, checked for parity against PyTorch on real images before it is kept.

The bidirectional Mamba scan is unrolled by tracing the model with a scan strategy that lowers to plain ops
(Mul/Add/Slice/Concat): no Loop, no CumSum (onnx-tensorrt lowers CumSum to a loop), no exp of running sums.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxslim
import torch

from ultralbm_edge import __version__
from ultralbm_edge.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ultralbm_edge.runtime.metadata import ModelMetadata
from ultralbm_edge.runtime.models import ModelNotFound, resolve_model

from .fp16 import convert_to_fp16
from .parity import ParityReport, check_parity, load_parity_images
from .scan_lowering import LOWERED_FORMS, lower_scan_nodes
from .scan_node import DOMAIN as SCAN_DOMAIN
from .scan_node import NODE_STRATEGY

# Strategies traced from PyTorch (the scan unrolled into Mul/Add/Slice/Concat), then the forms lowered from one
# SelectiveScan node (see scan_lowering); "auto" resolves per target (see resolve_scan).
TRACED_SCANS = ("blelloch", "parallel", "chunked", "sequential")
EXPORT_SCANS = TRACED_SCANS + LOWERED_FORMS
TARGETS = ("onnxruntime", "tensorrt")
MIN_OPSET = 17  # LayerNormalization is a single op from opset 17 on; older opsets would need it decomposed
MAX_OPSET = 20
FP16_TOLERANCES = {"max_tol": 5e-2, "mean_tol": 1e-3, "dice_tol": 0.99}


class ExportError(ValueError):
    """The export was refused or failed its checks; nothing was written at the output path."""


@dataclass
class ExportResult:
    path: Path
    metadata: ModelMetadata
    seconds: float
    nodes: int
    parity: ParityReport | None = None


# Forms that need ONNX Runtime's contrib ops; TensorRT cannot build them.
ORT_ONLY_SCANS = ("linear_attention",)
# What "auto" picks per target. ONNX Runtime CPU: LinearAttention runs the whole recurrence in one kernel
# (1.27x the no-scan floor vs 1.55x for blelloch, benchmarks/export_strategies.py). TensorRT: the log-depth
# Blelloch scan, whose plain elementwise ops build in seconds; `loop` builds too, but runs its 256 steps one
# after another on the GPU (engines could not be timed here: no GPU that TensorRT-RTX runs on).
AUTO_SCAN = {"onnxruntime": "linear_attention", "tensorrt": "blelloch"}


def resolve_scan(scan: str, target: str = "onnxruntime") -> str:
    """Map ``auto`` to the fastest exact strategy for ``target``; refuse a strategy the target cannot run."""
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose one of {TARGETS}")
    if scan == "auto":
        return AUTO_SCAN[target]
    if scan not in EXPORT_SCANS:
        raise ExportError(f"unknown scan strategy {scan!r}; choose auto or one of {EXPORT_SCANS}")
    if target == "tensorrt" and scan in ORT_ONLY_SCANS:
        raise ExportError(f"--scan {scan} uses ONNX Runtime's contrib op LinearAttention, which TensorRT cannot build; "
                          "choose --scan auto/blelloch/loop/plugin for --target tensorrt")
    return scan


def _default_parity_folder() -> Path:
    """The real sample images bundled with the package (ISIC 2017 and full-resolution PH2)."""
    import ultralbm_edge

    return Path(ultralbm_edge.__file__).resolve().parent / "samples" / "images"


def export_onnx(
    checkpoint: Checkpoint | str | Path,
    output: str | Path,
    *,
    scan: str = "auto",
    target: str = "onnxruntime",
    image_size: int = 256,
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int = MIN_OPSET,
    fp16: bool = False,
    check: bool = True,
    parity_images: str | Path | None = None,
    parity_count: int = 10,
) -> ExportResult:
    """Export ``checkpoint`` (a loaded Checkpoint, a .pth path or a bundled name) to ``output`` (ONNX), verify it,
    and only then move it into place.

    Input ``image``: float32 [N, 3, S, S] in [0, 255] after the official preprocessing; output ``prob``:
    [N, 1, S, S] sigmoid probabilities (float32 also for ``fp16=True``, whose internals are half precision
    except the scan, norms and sigmoid). ``batch`` fixes N unless ``dynamic_batch``. With ``check`` (default)
    the file is compared with PyTorch on ``parity_count`` real images and refused if it is out of tolerance.
    """
    started = time.perf_counter()
    output = Path(output)
    if image_size % 32 or image_size < 32:
        raise ExportError(f"--image-size {image_size} is not a multiple of 32 (the network downsamples 5 times by 2)")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset} is unsupported: use {MIN_OPSET}..{MAX_OPSET} (LayerNormalization needs opset >= 17)")
    if batch < 1:
        raise ExportError(f"--batch {batch} must be >= 1")
    if not output.parent.is_dir():
        raise ExportError(f"output directory {output.parent} does not exist — create it first or choose another -o")
    scan = resolve_scan(scan, target)
    try:
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(resolve_model(checkpoint))
    except (CheckpointError, ModelNotFound) as e:
        raise ExportError(str(e)) from None

    model = ckpt.model.eval().set_scan_strategy(NODE_STRATEGY if scan in LOWERED_FORMS else scan)
    meta = ModelMetadata(
        variant=ckpt.variant,
        channels=ckpt.channels,
        image_size=image_size,
        preprocessing=ckpt.preprocessing,
        threshold=ckpt.threshold,
        toolkit_version=__version__,
        source_checkpoint_sha256=ckpt.sha256,
        scan_strategy=scan,
        precision="fp16" if fp16 else "fp32",
    )
    dummy = torch.zeros(batch, 3, image_size, image_size)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".tmp.onnx", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing unrolls the scan's Python loops over static lengths; that is intended, not a hazard.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter is ours by choice
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                input_names=["image"],
                output_names=["prob"],
                opset_version=opset,
                dynamic_axes={"image": {0: "N"}, "prob": {0: "N"}} if dynamic_batch else None,
                do_constant_folding=True,
                custom_opsets={SCAN_DOMAIN: 1} if scan in LOWERED_FORMS else None,
                dynamo=False,
            )
        graph = onnxslim.slim(onnx.load(str(tmp)))  # constant folding, dead-node and shape-op cleanup
        if scan in LOWERED_FORMS:
            graph = lower_scan_nodes(graph, scan)
        if fp16:
            graph = convert_to_fp16(graph)
        graph.doc_string = f"UltraLBM-UNet ({ckpt.variant}) exported by ultralbm-edge {__version__}"
        onnx.helper.set_model_props(graph, meta.to_props())
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
        report = None
        if check:
            folder = Path(parity_images) if parity_images else _default_parity_folder()
            images = load_parity_images(folder, parity_count, image_size)
            tolerances = FP16_TOLERANCES if fp16 else {}
            report = check_parity(tmp, model, images, threshold=ckpt.threshold, **tolerances)
            if not report.ok:
                raise ExportError(f"{output}: not written — the exported graph is not exact: {report.summary()}")
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(output, meta, time.perf_counter() - started, len(graph.graph.node), report)


def read_metadata(path: str | Path) -> ModelMetadata:
    """The ModelMetadata stored in an exported ONNX file (without loading its weights into a session)."""
    model = onnx.load(str(path), load_external_data=False)
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, source=str(path))
