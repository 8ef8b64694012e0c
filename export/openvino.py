"""Export target ``openvino``: a checkpoint -> OpenVINO IR (``model.xml`` + ``model.bin``, f32 weights), converted
with ``openvino.convert_model`` from the exact ONNX export and checked for parity on OpenVINO before it is kept.

The ONNX is the ``loop`` form by default (one ``Scan`` per Mamba scan, written with the operand order OpenVINO
computes exactly; see ``scan_lowering._scan_body``); the log-depth traced forms (``--scan blelloch`` ...) convert
too. The model metadata travels in the IR's ``rt_info`` (``framework`` section), where the backend reads it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ultralbm_edge.checkpoint import Checkpoint
from ultralbm_edge.runtime.files import atomic_path

from .errors import ExportError
from .onnx_export import ExportResult, check_shape_and_outputs, export_onnx, open_checkpoint, parity_inputs, verify_on_runtimes


def export(
    checkpoint: Checkpoint | str | Path,
    output: str | Path,
    *,
    scan: str = "auto",
    image_size: int = 256,
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int = 17,
    check: bool = True,
    parity_images: str | Path | None = None,
    parity_count: int = 10,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``output`` (.xml) and its weights beside it (.bin); refused unless OpenVINO's outputs pass parity."""
    try:
        import openvino as ov

        from ultralbm_edge.runtime.backends.openvino_backend import LABEL, OpenVinoBackend
    except ImportError as e:
        raise ExportError(f"exporting to OpenVINO needs the openvino package ({e}) — pip install 'ultralbm-edge[openvino]'") from None
    started = time.perf_counter()
    output = Path(output)
    weights = output.with_suffix(".bin")
    if output.suffix.lower() != ".xml":
        raise ExportError(f"{output}: OpenVINO IR is written as NAME.xml (+ NAME.bin) — choose -o {output.with_suffix('.xml').name}")
    ckpt = open_checkpoint(checkpoint)
    check_shape_and_outputs([output, weights], ckpt.path, image_size, batch, overwrite)  # the .bin is never the checkpoint either
    with tempfile.TemporaryDirectory(prefix="ulbm-openvino-") as folder:
        onnx_path = Path(folder) / "model.onnx"
        exported = export_onnx(ckpt, onnx_path, scan=scan, target="openvino", image_size=image_size, batch=batch,
                               dynamic_batch=dynamic_batch, opset=opset, check=False)  # fmt: skip
        model = ov.convert_model(str(onnx_path))  # the ONNX metadata_props land in rt_info["framework"]
    reports = []
    with atomic_path(output) as tmp_xml, atomic_path(weights) as tmp_bin:  # .bin is committed first, then .xml
        written_bin = tmp_xml.with_suffix(".bin")  # where save_model puts the weights of tmp_xml
        try:
            ov.save_model(model, str(tmp_xml), compress_to_fp16=False)  # the default would halve the weights
            if check:
                images = parity_inputs(parity_images, parity_count, image_size)
                reports = verify_on_runtimes(output, [(LABEL, lambda: OpenVinoBackend(tmp_xml))], ckpt.model.eval(), images, ckpt.threshold)
            written_bin.replace(tmp_bin)
        finally:
            written_bin.unlink(missing_ok=True)
    result = ExportResult(output, exported.metadata, time.perf_counter() - started, len(model.get_ops()))
    result.parities, result.parity = reports, reports[0] if reports else None
    return result

