"""Runs inside one runtime's venv for benchmarks/portability.py (torch-free: numpy + the runtime + ultralbm-edge).

    python _portability_worker.py JOB.json   ->   one JSON line: {form: {status, max_diff, mean_diff, min_dice, scan}}

JOB.json: {"backend": "onnxruntime" | "openvino", "images": NPY, "reference": NPY, "models": {form: path}, "swap_off":
NAME}. Each model is opened the way the package opens it (open_backend: a portable file swaps its scans where this
onnxruntime can); a portable file on ONNX Runtime is also run with the swap off, reported under NAME.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.parity import compare


def _result(open_model, images: np.ndarray, reference: np.ndarray) -> dict:
    try:
        backend = open_model()
        report = compare(backend.run(images), reference)
    except Exception as e:  # noqa: BLE001 - a load failure is a result here
        return {"status": "load fails", "error": f"{type(e).__name__}: {str(e)[:400]}"}
    return {"status": "exact" if report.ok else "WRONG", "max_diff": report.max_abs_diff, "mean_diff": report.mean_abs_diff,
            "min_dice": report.min_mask_dice, "scan": getattr(backend, "scan_form", "")}  # fmt: skip


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    images, reference = np.load(job["images"]), np.load(job["reference"])
    results = {}
    for form, path in job["models"].items():
        results[form] = _result(lambda: open_backend(path, backend=job["backend"], threads=2), images, reference)
        if job["backend"] == "onnxruntime" and form == "portable":
            from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

            results[job["swap_off"]] = _result(lambda: OnnxRuntimeBackend(path, threads=2, swap_scan=False), images, reference)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
