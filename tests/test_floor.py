"""The oldest runtime stack the package claims (pyproject's floors = constraints-floor.txt: onnxruntime 1.17.3 with
numpy 1.26) runs the default export exactly: exported here, run in the torch-free venv .ci/run builds for it
(``ULTRALBM_FLOOR_PYTHON``, or ``.venv-floor`` in the checkout), through the backend and through ``predict``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from ultralbm_edge.assets import SAMPLE_IMAGES
from ultralbm_edge.checkpoint import load_checkpoint
from ultralbm_edge.export import reference_probs
from ultralbm_edge.runtime.dataset import load_images
from ultralbm_edge.runtime.model_files import resolve_model
from ultralbm_edge.runtime.parity import compare

FLOOR_PYTHON = Path(os.environ.get("ULTRALBM_FLOOR_PYTHON", REPO / ".venv-floor" / "bin" / "python"))
pytestmark = pytest.mark.skipif(
    not FLOOR_PYTHON.exists(),
    reason=f"no floor venv at {FLOOR_PYTHON} (.ci/run builds it: python3 -m venv .venv-floor && "
    ".venv-floor/bin/pip install -e . -c constraints-floor.txt)",
)


def _pinned(name: str) -> str:
    lines = (REPO / "constraints-floor.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in lines if line.startswith(f"{name}=="))


def test_pyproject_states_the_tested_floors():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in ("onnxruntime", "numpy", "opencv-python-headless", "onnx", "simplejpeg"):
        floor = next(d.split(">=")[1].split(",")[0].split()[0].strip('"') for d in deps if d.startswith(f"{name}>="))
        assert _pinned(name).startswith(floor), f"pyproject says {name}>={floor}; the floor venv tests {_pinned(name)}"


def test_the_default_export_is_exact_on_the_oldest_onnxruntime(exported_scans, tmp_path, ph2_val_images):
    path = exported_scans["portable"].path  # the default export, as `ultralbm-edge export` writes it
    images = load_images(SAMPLE_IMAGES, 6, 256).images
    np.save(tmp_path / "images.npy", images)
    code = (
        "import sys, numpy as np, onnxruntime as ort\n"
        "from ultralbm_edge.runtime.backends import open_backend\n"
        f"b = open_backend({str(path)!r})\n"
        "assert 'torch' not in sys.modules\n"
        f"np.save({str(tmp_path / 'probs.npy')!r}, b.run(np.load({str(tmp_path / 'images.npy')!r})))\n"
        "print(ort.__version__, np.__version__, b.scan_form)\n"
    )
    res = subprocess.run([str(FLOOR_PYTHON), "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split()[:2] == [_pinned("onnxruntime"), _pinned("numpy")] and "as exported" in res.stdout, res.stdout
    report = compare(np.load(tmp_path / "probs.npy"), reference_probs(load_checkpoint(resolve_model("ultralbm", "torch")).model.eval(), images))
    assert report.ok, report.summary()
    cli = FLOOR_PYTHON.with_name("ultralbm-edge")
    res = subprocess.run([str(cli), "predict", str(ph2_val_images), "-m", str(path), "-o", str(tmp_path / "masks")], capture_output=True, text=True)
    assert res.returncode == 0 and "30 segmented, 0 already done, 0 failed" in res.stdout, res.stdout + res.stderr
    assert len(list((tmp_path / "masks" / "masks").glob("*.png"))) == 30
