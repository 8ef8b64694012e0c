"""evaluate reproduces the authors' own validation numbers; benchmark and demo run end to end."""

import json

import numpy as np
import pytest

from conftest import run_cli
from ultralbm_edge.runtime.metrics import segmentation_metrics


def test_metrics_from_one_global_confusion_matrix():
    probs = np.array([[[0.9, 0.2], [0.7, 0.1]], [[0.1, 0.1], [0.1, 0.8]]])
    truth = np.array([[[1, 0], [0, 0]], [[0, 0], [1, 1]]], dtype=float)
    m = segmentation_metrics(probs, truth)
    # tp=2 (0,0 and 1,(1,1)), fp=1, fn=1, tn=4
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 4}
    assert m["dsc"] == pytest.approx(4 / 6) and m["iou"] == pytest.approx(2 / 4)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(4 / 5)
    assert m["mean_dice"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_evaluate_matches_the_authors_validation_score(onnx_model, official_dir, tmp_path):
    """The official run recorded its best PH2-val DSC/IoU with the authors' test code; ours must agree."""
    official = json.loads((official_dir / "official_run.json").read_text())
    res = run_cli("evaluate", "-m", str(onnx_model), "--data", str(official_dir.parents[1] / "data" / "ph2" / "val"),
                  "--json", str(tmp_path / "m.json"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_images"] == 30
    assert m["dsc"] == pytest.approx(official["best_val_dsc"], abs=2e-3)
    assert m["iou"] == pytest.approx(official["best_val_iou"], abs=2e-3)
    assert set(m) >= {"dsc", "iou", "accuracy", "sensitivity", "specificity", "mean_dice", "n_images"}


def test_evaluate_rejects_a_folder_without_masks(onnx_model, tmp_path):
    (tmp_path / "images").mkdir()
    res = run_cli("evaluate", "-m", str(onnx_model), "--data", str(tmp_path))
    assert res.returncode == 2 and "expected sub-folders images/ and masks/" in res.stderr


def test_benchmark_side_by_side_json(onnx_model, official_dir, tmp_path):
    res = run_cli("benchmark", "-m", str(onnx_model), "-m", str(official_dir / "best.pth"), "--batch-sizes", "1,2", "--runs", "2",
                  "--warmup", "1", "--json", str(tmp_path / "b.json"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert [m["backend"]["backend"] for m in data["models"]] == ["onnxruntime", "torch"]
    for m in data["models"]:
        assert [b["batch"] for b in m["batches"]] == [1, 2]
        assert all(b["p50_ms"] > 0 and b["p50_ms"] <= b["p99_ms"] for b in m["batches"])
    assert float(data["environment"]["peak_rss_mb"]) > 0


def test_demo_runs_end_to_end(tmp_path):
    res = run_cli("demo", "-o", str(tmp_path / "demo"), "--runs", "2")
    assert res.returncode == 0, res.stderr
    assert "PASS" in res.stdout and "done: results are in" in res.stdout
    assert len(list((tmp_path / "demo" / "predictions" / "masks").glob("*.png"))) == 10
