"""Day one as a user: one spelling per option, progress on long steps, per-image scores, reports a browser renders,
benchmark outputs, engines named once, nothing written into the working folder by the demo."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, run_cli
from ultralbm_edge.runtime.metrics import dice

SAMPLES = REPO / "ultralbm_edge" / "samples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.parametrize("command", ["predict", "evaluate", "benchmark", "calibrate", "build-engine", "export", "info", "demo"])
def test_every_command_names_the_model_the_same_way(command):
    res = run_cli(command, "-h")
    assert res.returncode == 0 and "--model" in res.stdout and "-m" in res.stdout, res.stdout[-2000:]


def test_the_model_list_says_which_networks_have_weights_bundled():
    res = run_cli("info", "--models")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    said = {lines[i].split()[0]: lines[i + 2].strip() for i in range(0, len(lines), 3)}  # three lines a network
    assert said["ultralight-vm-unet"] == "trained weights bundled (-m ultralight-vm-unet)"
    assert said["resmamba-ulite"] == "no weights bundled (train --variant resmamba-ulite)"
    assert set(said) == {"ultralbm", "ultralbm-t", "ultralight-vm-unet", "resmamba-ulite", "dermomamba"}


def test_progress_is_plain_lines_when_piped_and_silent_with_quiet(onnx_model, tmp_path):
    res = run_cli("predict", str(SAMPLES / "images"), "-m", str(onnx_model), "-o", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    assert "segmenting: 10/10 in" in res.stderr  # the closing progress line, on stderr
    assert ":onnxruntime:" not in res.stderr  # ONNX Runtime's own log lines ([W:onnxruntime:...]) stay quiet
    quiet = run_cli("-q", "predict", str(SAMPLES / "images"), "-m", str(onnx_model), "-o", str(tmp_path / "b"))
    assert quiet.returncode == 0 and quiet.stderr == "" and "10 segmented" in quiet.stdout


def test_evaluate_scores_exactly_what_predict_writes_per_image(onnx_model, tmp_path):
    res = run_cli("evaluate", "-m", str(onnx_model), "--data", str(SAMPLES), "--json", str(tmp_path / "s.json"),
                  "--csv", str(tmp_path / "s.csv"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "raw" in res.stdout and "post-processed" in res.stdout and "worst Dice" in res.stdout
    result = json.loads((tmp_path / "s.json").read_text())
    per_image = result["per_image"]
    assert len(per_image) == 10 and [s["dice"] for s in per_image] == sorted(s["dice"] for s in per_image)
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["image"] for r in rows] == [s["image"] for s in per_image]
    assert set(result["postprocessed"]) >= {"dsc", "iou", "mean_dice", "options"}
    # The post-processed score is the Dice of the mask predict writes, at the image's own size.
    out = tmp_path / "pred"
    assert run_cli("predict", str(SAMPLES / "images"), "-m", str(onnx_model), "-o", str(out)).returncode == 0
    for s in per_image:
        stem = Path(s["image"]).stem
        mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 0
        truth = cv2.imread(str(SAMPLES / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) >= 128
        assert dice(mask, truth) == pytest.approx(s["dice"], abs=1e-5), stem


def test_benchmark_writes_csv_plot_and_json_to_stdout(onnx_model, tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the [report] extra (matplotlib)")
    res = run_cli("benchmark", "-m", str(onnx_model), "--batch-sizes", "1,2", "--runs", "2", "--warmup", "1",
                  "--csv", str(tmp_path / "b.csv"), "--plot", str(tmp_path / "b.png"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "hardware threads" in res.stdout and "inference threads" in res.stdout
    rows = list(csv.DictReader(open(tmp_path / "b.csv")))
    assert [int(r["batch"]) for r in rows] == [1, 2] and all(float(r["p50_ms"]) > 0 for r in rows)
    assert cv2.imread(str(tmp_path / "b.png")).std() > 5  # a drawn plot, not a blank image
    res = run_cli("-q", "benchmark", "-m", str(onnx_model), "--batch-sizes", "1", "--runs", "2", "--json", "-", cwd=tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout)["models"][0]["batches"][0]["batch"] == 1
    assert not (tmp_path / "-").exists()


def test_engine_files_are_named_once(tmp_path):
    from ultralbm_edge.export.tensorrt import engine_path

    assert engine_path(tmp_path / "m.onnx", "int8").name == "m.int8.engine"
    assert engine_path(tmp_path / "m.int8.onnx", "int8").name == "m.int8.engine"
    assert engine_path(tmp_path / "m.fp16.onnx", "fp16").name == "m.fp16.engine"
    assert engine_path(tmp_path / "m.int8.onnx", "fp16").name == "m.int8.fp16.engine"


def test_a_missing_tensorrt_is_reported_before_the_export_runs(tmp_path):
    from ultralbm_edge.export import export_engine
    from ultralbm_edge.runtime.backends.tensorrt_env import TensorRTError

    with pytest.raises(TensorRTError, match="unknown TensorRT package"):
        export_engine("ultralbm", tmp_path / "m.fp16.engine", package="tensorflow")
    assert list(tmp_path.iterdir()) == []


def test_demo_writes_nothing_into_the_working_folder(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    res = run_cli("demo", "--runs", "2", cwd=work)
    assert res.returncode == 0, res.stderr
    out = Path(res.stdout.strip().splitlines()[-1].removeprefix("done: results are in "))
    try:
        assert list(work.iterdir()) == [] and out.is_relative_to(Path(tempfile.gettempdir()).resolve())
        assert len(list((out / "predictions" / "masks").glob("*.png"))) == 10
    finally:
        shutil.rmtree(out, ignore_errors=True)
    again = run_cli("demo", "-o", str(tmp_path / "d"), "--runs", "2")
    assert again.returncode == 0
    refused = run_cli("demo", "-o", str(tmp_path / "d"), "--runs", "2")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr


@pytest.fixture(scope="module")
def reports(onnx_model, tmp_path_factory) -> dict[str, Path]:
    """The three HTML reports, made from the bundled real images."""
    d = tmp_path_factory.mktemp("reports")
    assert run_cli("predict", str(SAMPLES / "images"), "-m", str(onnx_model), "-o", str(d / "pred"), "--report").returncode == 0
    assert run_cli("evaluate", "-m", str(onnx_model), "--data", str(SAMPLES), "--report", str(d / "eval.html")).returncode == 0
    made = {"predict": d / "pred" / "report.html", "evaluate": d / "eval.html"}
    try:
        import matplotlib  # noqa: F401

        assert run_cli("benchmark", "-m", str(onnx_model), "--batch-sizes", "1,2", "--runs", "2",
                       "--report", str(d / "bench.html")).returncode == 0  # fmt: skip
        made["benchmark"] = d / "bench.html"
    except ImportError:
        pass
    return made


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium for the browser check (apt-get install chromium)")
@pytest.mark.parametrize("which", ["predict", "evaluate", "benchmark"])
def test_reports_render_in_chromium(reports, which, tmp_path):
    """Each report in a real headless Chromium: no console errors, every image decoded, a page that is not blank."""
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (the [dev] extra)")
    if which not in reports:
        pytest.skip("the benchmark report's plot needs the [report] extra (matplotlib)")
    page_file = reports[which]
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        shot = page.screenshot(full_page=False)
        browser.close()
    assert not errors, errors
    assert images and all(done and width > 0 for done, width in images), images
    pixels = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert pixels.std() > 10, "the screenshot is blank"
    if which != "benchmark":
        assert len(images) >= 10


def test_report_pages_are_self_contained(reports):
    for page in reports.values():
        text = page.read_text()
        assert "http://" not in text and "https://" not in text and "<script" not in text
        assert os.path.getsize(page) < 20_000_000
