"""``export_onnx``: a checkpoint -> a self-describing ONNX file that stock ONNX Runtime and TensorRT run without
custom ops, checked for parity against PyTorch on real images before it is kept.

The bidirectional Mamba scan is either unrolled by tracing the model with a registered solver (plain
Mul/Add/Slice/Concat: no Loop, no CumSum, no exp of running sums) or emitted as one ``ultralbm::SelectiveScan``
node and lowered afterwards (``scan_lowering``); ``scan_policy`` says which form suits which target.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxslim
import torch

from ultralbm_edge.assets import SAMPLE_IMAGES
from ultralbm_edge.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ultralbm_edge.ops import scan_strategies
from ultralbm_edge.runtime.dataset import DatasetError, load_images
from ultralbm_edge.runtime.files import OutputError, atomic_path, check_output
from ultralbm_edge.runtime.formats import INPUT_NAME, OUTPUT_NAME
from ultralbm_edge.runtime.metadata import ModelMetadata
from ultralbm_edge.runtime.model_files import ModelNotFound, resolve_model
from ultralbm_edge.runtime.parity import EXACT, FP16, ParityReport

from .errors import ExportError
from .fp16 import convert_to_fp16
from .parity import check_parity
from .scan_lowering import lower_scan_nodes
from .scan_node import DOMAIN as SCAN_DOMAIN
from .scan_node import NODE_STRATEGY
from .scan_policy import AUTO_SCAN, LOWERED_FORMS, ORT_ONLY_SCANS, TARGETS

MIN_OPSET = 17  # LayerNormalization is a single op from opset 17 on; older opsets would need it decomposed
MAX_OPSET = 20


@dataclass
class ExportResult:
    path: Path
    metadata: ModelMetadata
    seconds: float
    nodes: int
    parity: ParityReport | None = None


def export_scans() -> tuple[str, ...]:
    """Every scan form an export can take: the registered solvers (traced), then the lowered node forms."""
    return (*scan_strategies(), *LOWERED_FORMS)


def resolve_scan(scan: str, target: str = "onnxruntime") -> str:
    """Map ``auto`` to the fastest exact strategy for ``target``; refuse a strategy the target cannot run."""
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose one of {TARGETS}")
    if scan == "auto":
        return AUTO_SCAN[target]
    if scan not in export_scans():
        raise ExportError(f"unknown scan strategy {scan!r}; choose auto or one of {export_scans()}")
    if target == "tensorrt" and scan in ORT_ONLY_SCANS:
        raise ExportError(f"--scan {scan} uses ONNX Runtime's contrib op LinearAttention, which TensorRT cannot build; "
                          "choose --scan auto/blelloch/loop/plugin for --target tensorrt")
    return scan


def _check_request(output: Path, source: Path, image_size: int, batch: int, opset: int, overwrite: bool) -> None:
    if image_size % 32 or image_size < 32:
        raise ExportError(f"--image-size {image_size} is not a multiple of 32 (the network downsamples 5 times by 2)")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset} is unsupported: use {MIN_OPSET}..{MAX_OPSET} (LayerNormalization needs opset >= 17)")
    if batch < 1:
        raise ExportError(f"--batch {batch} must be >= 1")
    try:
        check_output(output, inputs=[source], overwrite=overwrite)
    except OutputError as e:
        raise ExportError(str(e)) from None


def _trace(model: torch.nn.Module, path: Path, batch: int, image_size: int, opset: int, dynamic_batch: bool, lowered: bool) -> None:
    dummy = torch.zeros(batch, 3, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing unrolls the scan's Python loops over static lengths; that is intended, not a hazard.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter is ours by choice
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}} if dynamic_batch else None,
            do_constant_folding=True,
            custom_opsets={SCAN_DOMAIN: 1} if lowered else None,
            dynamo=False,
        )


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
    overwrite: bool = False,
) -> ExportResult:
    """Export ``checkpoint`` (a loaded Checkpoint, a .pth path or a bundled name) to ``output`` (ONNX), verify it,
    and only then move it into place.

    Input ``image``: float32 [N, 3, S, S] in [0, 255] after the official preprocessing; output ``prob``:
    [N, 1, S, S] sigmoid probabilities (float32 also for ``fp16=True``, whose internals are half precision
    except the scan, norms and sigmoid). ``batch`` fixes N unless ``dynamic_batch``. With ``check`` (default)
    the file is compared with PyTorch on ``parity_count`` real images and refused if it is out of tolerance.
    An existing ``output`` is replaced only with ``overwrite``, and never if it is the checkpoint itself.
    """
    started = time.perf_counter()
    output = Path(output)
    scan = resolve_scan(scan, target)
    try:
        source = Path(checkpoint.path) if isinstance(checkpoint, Checkpoint) else resolve_model(checkpoint, "torch")
        _check_request(output, source, image_size, batch, opset, overwrite)  # the cheap refusals before loading
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(source)
    except (CheckpointError, ModelNotFound) as e:
        raise ExportError(str(e)) from None
    lowered = scan in LOWERED_FORMS
    model = ckpt.model.eval()
    meta = ckpt.metadata(image_size=image_size, scan_strategy=scan, precision="fp16" if fp16 else "fp32")
    with atomic_path(output) as tmp:
        with model.using_scan(NODE_STRATEGY if lowered else scan):
            _trace(model, tmp, batch, image_size, opset, dynamic_batch, lowered)
        graph = onnxslim.slim(onnx.load(str(tmp)))  # constant folding, dead-node and shape-op cleanup
        if lowered:
            graph = lower_scan_nodes(graph, scan)
        if fp16:
            graph = convert_to_fp16(graph, meta.fp32_scopes)
        graph.doc_string = f"{meta.variant} exported by ultralbm-edge {meta.toolkit_version}"
        onnx.helper.set_model_props(graph, meta.to_props())
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
        report = None
        if check:
            try:
                images = load_images(parity_images or SAMPLE_IMAGES, parity_count, image_size).images
            except DatasetError as e:
                raise ExportError(f"{e} — pass --parity-images DIR or --no-check") from None
            report = check_parity(tmp, model, images, threshold=ckpt.threshold, tolerances=FP16 if fp16 else EXACT)
            if not report.ok:
                raise ExportError(f"{output}: not written — the exported graph is not exact: {report.summary()}")
    return ExportResult(output, meta, time.perf_counter() - started, len(graph.graph.node), report)
