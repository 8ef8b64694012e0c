"""`ultralbm-edge predict`: the golden contract through the CLI, outputs, resume, torch-free runtime."""

import csv
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import cli_exe, run_cli
from ultralbm_edge.runtime.files import TEMP_PREFIX
from ultralbm_edge.runtime.parity import compare


def _probs(out, names):
    return np.stack([np.load(out / "probs" / n.replace(".jpg", ".npy")) for n in names])


@pytest.mark.parametrize("which", ["pth", "onnx"])
def test_cli_predict_reproduces_golden_outputs(which, official_dir, onnx_model, golden, ph2_val_images, tmp_path):
    model = official_dir / "best.pth" if which == "pth" else onnx_model
    res = run_cli("predict", str(ph2_val_images), "--model", str(model), "-o", str(tmp_path), "--save-probs")
    assert res.returncode == 0, res.stderr
    probs = _probs(tmp_path, golden["names"])
    assert probs.shape == (30, 256, 256) and probs.dtype == np.float32
    report = compare(probs, golden["probs"][:, 0], reference="the authors' outputs")
    assert report.ok, report.summary()


def test_outputs_csv_masks_and_overlays(onnx_model, ph2_val_images, tmp_path):
    res = run_cli("predict", str(ph2_val_images / "IMD393.jpg"), "--model", str(onnx_model), "-o", str(tmp_path), "--overlay")
    assert res.returncode == 0, res.stderr
    image = cv2.imread(str(ph2_val_images / "IMD393.jpg"))
    mask = cv2.imread(str(tmp_path / "masks" / "IMD393.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
    assert cv2.imread(str(tmp_path / "overlays" / "IMD393.jpg")).shape == image.shape
    (row,) = csv.DictReader(open(tmp_path / "results.csv"))
    assert row["status"] == "ok" and int(row["width"]) == image.shape[1]
    assert int(row["lesion_area_px"]) == int((mask > 0).sum())
    # One connected lesion with no holes (largest component + hole filling are on by default).
    n, _ = cv2.connectedComponents((mask > 0).astype(np.uint8))
    assert n == 2


def test_predict_process_never_imports_torch(onnx_model, ph2_val_images, tmp_path):
    code = (
        "import sys\n"
        "from ultralbm_edge.cli import main\n"
        "sys.argv = ['ultralbm-edge', 'predict', sys.argv[1], '--model', sys.argv[2], '-o', sys.argv[3]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH', code)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(ph2_val_images / "IMD393.jpg"), str(onnx_model), str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.stdout.strip().splitlines()[-1] == "NO_TORCH 0", res.stdout + res.stderr


def test_kill_midway_leaves_no_truncated_files_and_resume_finishes(onnx_model, isic_val, tmp_path):
    """kill -9 in the middle of a run, then the same command: every mask is complete and byte-identical to an
    uninterrupted run's, nothing is lost or duplicated, and no temporary file is left."""
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((isic_val / "images").glob("*.jpg"))[:120]:
        (images / p.name).write_bytes(p.read_bytes())
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert run_cli("predict", str(images), "--model", str(onnx_model), "-o", str(reference), "-b", "4").returncode == 0
    args = ["predict", str(images), "--model", str(onnx_model), "-o", str(out), "--batch-size", "4"]
    proc = subprocess.Popen([cli_exe(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "masks").glob("*.png"))) < 20:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = [p for p in (out / "masks").glob("*.png") if not p.name.startswith(TEMP_PREFIX)]
    assert 0 < len(written) < 120
    for p in written:  # every PNG present is complete
        assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None, p
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    segmented, done = (int(n) for n in re.match(r"(\d+) segmented, (\d+) already done", res.stdout).groups())
    assert segmented + done == 120 and 0 < done <= len(written), res.stdout  # journalled before the kill: kept
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 120 and {r["status"] for r in rows} == {"ok"}  # one row per image, none lost
    masks = sorted(p.name for p in (out / "masks").iterdir())
    assert masks == sorted(p.name for p in (reference / "masks").iterdir()) and len(masks) == 120
    for name in masks:
        assert (out / "masks" / name).read_bytes() == (reference / "masks" / name).read_bytes(), name
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX)]
