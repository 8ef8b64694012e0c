"""``export_onnx``: a checkpoint -> a self-describing ONNX file that stock ONNX Runtime and TensorRT run without
custom ops, checked for parity against PyTorch on real images before it is kept.

The bidirectional Mamba scan is either unrolled by tracing the model with a registered solver (plain
Mul/Add/Slice/Concat: no Loop, no CumSum, no exp of running sums) or emitted as one ``ultralbm::SelectiveScan``
node and lowered afterwards (``scan_lowering``); ``scan_policy`` says which form suits which target, and the
model registry whether a network's scans fit the node at all (``ModelSpec.lowered_scan``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxslim
import torch

from ultralbm_edge.assets import SAMPLE_IMAGES
from ultralbm_edge.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ultralbm_edge.models import model_spec
from ultralbm_edge.models.ultralbm_unet import UltraLBMUNet
from ultralbm_edge.ops import scan_strategies
from ultralbm_edge.runtime.backends.base import BackendError
from ultralbm_edge.runtime.dataset import DatasetError, load_images
from ultralbm_edge.runtime.files import OutputError, atomic_path, check_output
from ultralbm_edge.runtime.formats import INPUT_NAME, OUTPUT_NAME
from ultralbm_edge.runtime.metadata import ModelMetadata
from ultralbm_edge.runtime.model_files import ModelNotFound, resolve_model
from ultralbm_edge.runtime.parity import EXACT, FP16, ParityReport, Tolerances

from .errors import ExportError
from .fp16 import convert_to_fp16
from .lean_forward import LeanUltraLBM
from .parity import check_parity_on, onnx_runtimes
from .scan_lowering import lower_scan_nodes
from .scan_node import DOMAIN as SCAN_DOMAIN
from .scan_node import NODE_STRATEGY
from .scan_policy import AUTO_SCAN, AUTO_TRACED_SCAN, LOWERED_FORMS, TARGETS, UNSUPPORTED_SCANS

MIN_OPSET = 17  # LayerNormalization is a single op from opset 17 on; older opsets would need it decomposed
MAX_OPSET = 20


@dataclass
class ExportResult:
    path: Path
    metadata: ModelMetadata
    seconds: float
    nodes: int
    parity: ParityReport | None = None  # the runtime the file is made for, as it opens it
    parities: list[ParityReport] = field(default_factory=list)  # every installed runtime that runs it, that one first


def export_scans() -> tuple[str, ...]:
    """Every scan form an export can take: the registered solvers (traced), then the lowered node forms."""
    return (*scan_strategies(), *LOWERED_FORMS)


def resolve_scan(scan: str, target: str = "onnxruntime", variant: str | None = None, fp16: bool = False) -> str:
    """Map ``auto`` to the fastest exact strategy for ``target`` (and for the registered model ``variant``, when
    given); refuse a strategy the target, or the model, cannot take."""
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose one of {TARGETS}")
    lowered_ok = variant is None or model_spec(variant).lowered_scan
    if scan == "auto":
        chosen = AUTO_SCAN[target] if lowered_ok else AUTO_TRACED_SCAN[target]
        # FP16 conversion puts casts inside the region a portable file records for the ONNX Runtime swap, so the
        # swap could not apply: the same stock Scan graph without the record.
        return "loop" if fp16 and chosen == "portable" else chosen
    if fp16 and scan == "portable":
        raise ExportError("--scan portable with --fp16: the FP16 casts break the scan record ONNX Runtime swaps at load; "
                          "choose --scan auto (the same Scan graph, no record) or drop --fp16")
    if scan not in export_scans():
        raise ExportError(f"unknown scan strategy {scan!r}; choose auto or one of {export_scans()}")
    if scan in UNSUPPORTED_SCANS[target]:
        what = "ONNX Runtime's contrib op LinearAttention" if scan == "linear_attention" else "a custom SelectiveScan node"
        can = [s for s in ("auto", "portable", "blelloch", "loop", "plugin") if s not in UNSUPPORTED_SCANS[target]]
        name = {"tensorrt": "TensorRT cannot build", "openvino": "OpenVINO cannot read"}[target]
        raise ExportError(f"--scan {scan} uses {what}, which {name}; choose --scan {'/'.join(can)} for --target {target}")
    if scan in LOWERED_FORMS and not lowered_ok:
        raise ExportError(f"--scan {scan} emits Mamba's gated scan as one node, and {variant} scans without a gate "
                          f"(VMamba's SS2D); choose --scan auto or one of {scan_strategies()}")
    return scan


def _check_request(output: Path, source: Path, image_size: int, batch: int, opset: int, overwrite: bool) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset} is unsupported: use {MIN_OPSET}..{MAX_OPSET} (LayerNormalization needs opset >= 17)")
    check_shape_and_outputs([output], source, image_size, batch, overwrite)


def check_shape_and_outputs(outputs: list[Path], source: Path, image_size: int, batch: int, overwrite: bool) -> None:
    """The refusals every exporter shares, before any work: the input size and batch the network takes, and files it
    may write (never the checkpoint it reads; an existing one only with ``overwrite``)."""
    if image_size % 32 or image_size < 32:
        raise ExportError(f"--image-size {image_size} is not a multiple of 32 (the network downsamples 5 times by 2)")
    if batch < 1:
        raise ExportError(f"--batch {batch} must be >= 1")
    try:
        for path in outputs:
            check_output(path, inputs=[source], overwrite=overwrite)
    except OutputError as e:
        raise ExportError(str(e)) from None


def _trace(model: torch.nn.Module, path: Path, batch: int, image_size: int, opset: int, dynamic_batch: bool, lowered: bool) -> None:
    dummy = torch.zeros(batch, 3, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing unrolls the scan's Python loops over static lengths; that is intended, not a hazard.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter is ours by choice
        # InstanceNorm without running statistics (ResMamba-ULite, DermoMamba) always normalises by the input's own
        # statistics, in eval mode too; the exporter's "train=True" notice is about exactly that.
        warnings.filterwarnings("ignore", message="ONNX export mode is set to TrainingMode.EVAL, but operator 'instance_norm'")
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
    resolve_scan(scan, target, fp16=fp16)
    try:
        source = Path(checkpoint.path) if isinstance(checkpoint, Checkpoint) else resolve_model(checkpoint, "torch")
    except ModelNotFound as e:
        raise ExportError(str(e)) from None
    _check_request(output, source, image_size, batch, opset, overwrite)  # the cheap refusals before loading
    ckpt = open_checkpoint(checkpoint)
    scan = resolve_scan(scan, target, ckpt.variant, fp16)  # the model's own scan forms (ModelSpec.lowered_scan)
    lowered = scan in LOWERED_FORMS
    model = ckpt.model.eval()
    meta = ckpt.metadata(image_size=image_size, scan_strategy=scan, precision="fp16" if fp16 else "fp32")
    traced = export_forward(model, target)
    with atomic_path(output) as tmp:
        with model.using_scan(NODE_STRATEGY if lowered else scan):
            _trace(traced, tmp, batch, image_size, opset, dynamic_batch, lowered)
        graph = onnxslim.slim(onnx.load(str(tmp)))  # constant folding, dead-node and shape-op cleanup
        if lowered:
            graph = lower_scan_nodes(graph, scan)
        if fp16:
            graph = convert_to_fp16(graph, meta.fp32_scopes)
        form = " (lean export graph)" if traced is not model else ""
        graph.doc_string = f"{meta.variant} exported by ultralbm-edge {meta.toolkit_version}{form}"
        lowering_props = {p.key: p.value for p in graph.metadata_props}  # a portable export's scan swap record
        onnx.helper.set_model_props(graph, {**lowering_props, **meta.to_props()})
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
        reports = []
        if check:
            images = parity_inputs(parity_images, parity_count, image_size)
            reports = verify_on_runtimes(output, onnx_runtimes(tmp, scan), model, images, ckpt.threshold, FP16 if fp16 else EXACT)
    return ExportResult(output, meta, time.perf_counter() - started, len(graph.graph.node), reports[0] if reports else None, reports)


def export_forward(model: torch.nn.Module, target: str) -> torch.nn.Module:
    """The module traced for ``target``: UltraLBM-UNet's lean export graph (``lean_forward``: the same function in
    fewer, larger operators, 1.2x faster on ONNX Runtime CPU, under the same parity gate), except for TensorRT, whose
    engines could not be run with it here; every other network as it is."""
    if isinstance(model, UltraLBMUNet) and target != "tensorrt":
        return LeanUltraLBM(model).eval()
    return model


def open_checkpoint(checkpoint: Checkpoint | str | Path) -> Checkpoint:
    """A loaded Checkpoint as it is; a .pth path or a bundled name loaded (refusals as ExportError)."""
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    try:
        return load_checkpoint(resolve_model(checkpoint, "torch"))
    except (CheckpointError, ModelNotFound) as e:
        raise ExportError(str(e)) from None


def parity_inputs(parity_images: str | Path | None, count: int, image_size: int) -> np.ndarray:
    """The real images parity is checked on (the bundled samples unless a folder is given), preprocessed."""
    try:
        return load_images(parity_images or SAMPLE_IMAGES, count, image_size).images
    except DatasetError as e:
        raise ExportError(f"{e} — pass --parity-images DIR or --no-check") from None


def verify_on_runtimes(
    output: Path, runtimes: list, model: torch.nn.Module, images: np.ndarray, threshold: float, tolerances: Tolerances = EXACT
) -> list[ParityReport]:
    """Parity on every runtime in ``runtimes``; the export is refused, naming the runtime and the reason, when one
    cannot run the file or is out of tolerance (a form a runtime computes wrongly is never written silently)."""
    try:
        reports = check_parity_on(runtimes, model, images, threshold, tolerances)
    except BackendError as e:
        raise ExportError(f"{output}: not written — an installed runtime cannot run it: {e}") from None
    for report in reports:
        if not report.ok:
            raise ExportError(f"{output}: not written — the exported graph is not exact on {report.summary()}")
    return reports
