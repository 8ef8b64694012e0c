"""`predict --ray` (runtime.distributed) on a local Ray instance of 2 CPUs: the same masks, rows and resume rules as
a local run, bad images reported, and a worker killed mid-run loses and duplicates nothing.

Ray starts once for the module (about 10 s here); each run on it costs a few seconds. The tests need the ``ray``
extra (installed by CI through the README's test command) and are skipped with the reason without it."""

from __future__ import annotations

import csv
import importlib.util
import os
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from ultralbm_edge.runtime.files import TEMP_PREFIX
from ultralbm_edge.runtime.predict import PredictOptions, predict

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed: pip install -e '.[ray]' -c constraints-ci.txt")
TIMING = {"decode_ms", "infer_ms", "post_ms"}
N_GOOD = 20


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance (2 CPUs) for the module; its address lets a CLI subprocess join it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(isic_val, tmp_path_factory) -> Path:
    """20 real ISIC images, one full-resolution PH2 image and one corrupt file."""
    d = tmp_path_factory.mktemp("ray_in")
    for p in sorted((isic_val / "images").glob("*.jpg"))[:N_GOOD]:
        (d / p.name).write_bytes(p.read_bytes())
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


OPTS = dict(batch_size=4, save_probs=True, overlay=True)


@pytest.fixture(scope="module")
def reference(folder, onnx_model, tmp_path_factory) -> Path:
    from ultralbm_edge.runtime.backends import open_backend

    out = tmp_path_factory.mktemp("ray_ref") / "out"
    predict([folder], open_backend(onnx_model), out, PredictOptions(**OPTS))
    return out


def _rows(out: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len({r["path"] for r in rows}), "an image has two rows"
    return {Path(r["path"]).name: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def _same_outputs(out: Path, reference: Path) -> None:
    assert _rows(out) == _rows(reference)
    for sub in ("masks", "probs", "overlays"):
        names = sorted(p.name for p in (reference / sub).iterdir())
        assert sorted(p.name for p in (out / sub).iterdir()) == names and len(names) == N_GOOD, sub
        for name in names:
            assert (out / sub / name).read_bytes() == (reference / sub / name).read_bytes(), (sub, name)
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@needs_ray
def test_ray_run_equals_the_local_run_and_resumes_like_it(ray_cluster, folder, onnx_model, reference, tmp_path):
    from ultralbm_edge.runtime.distributed import predict_ray

    out = tmp_path / "out"
    summary = predict_ray([folder], onnx_model, out, PredictOptions(**OPTS))
    assert (summary.ok, summary.skipped, [Path(p).name for p, _ in summary.failed]) == (N_GOOD, 0, ["broken.jpg"])
    assert summary.engine == "onnxruntime on Ray"
    _same_outputs(out, reference)
    # A local run stopped half way, finished on Ray: the same manifest, the same plan of what is done.
    half = tmp_path / "half"
    first = sorted(folder.glob("ISIC_*.jpg"))[: N_GOOD // 2]
    from ultralbm_edge.runtime.backends import open_backend

    predict(first, open_backend(onnx_model), half, PredictOptions(**OPTS))
    summary = predict_ray([folder], onnx_model, half, PredictOptions(**OPTS))
    assert (summary.ok, summary.skipped, len(summary.failed)) == (N_GOOD // 2, N_GOOD // 2, 1)
    _same_outputs(half, reference)
    # Other settings are refused as locally (one line, before anything is written).
    from ultralbm_edge.runtime.run_folder import RunFolderError

    with pytest.raises(RunFolderError, match="holds masks made with other settings"):
        predict_ray([folder], onnx_model, half, PredictOptions(**OPTS, threshold=0.3))


def _crash_once(marker: Path):
    """An inference actor whose first call anywhere kills its process (as a lost node would); defined in a function
    so that Ray ships the class by value to its workers."""
    from ultralbm_edge.runtime.distributed import InferenceActor

    class CrashOnce(InferenceActor):
        def __call__(self, batch):
            if not marker.exists():
                marker.write_text("crashed")
                os._exit(1)
            return super().__call__(batch)

    return CrashOnce


@needs_ray
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(ray_cluster, folder, onnx_model, reference, tmp_path):
    from ultralbm_edge.runtime.distributed import predict_ray

    out, marker = tmp_path / "out", tmp_path / "crashed"
    summary = predict_ray([folder], onnx_model, out, PredictOptions(**OPTS), actor_class=_crash_once(marker))
    assert marker.read_text() == "crashed"  # the actor really died: Ray restarted it and retried its batch
    assert (summary.ok, summary.skipped, [Path(p).name for p, _ in summary.failed]) == (N_GOOD, 0, ["broken.jpg"])
    _same_outputs(out, reference)


@needs_ray
def test_cli_joins_the_cluster_named_by_ray_address(ray_cluster, folder, onnx_model, reference, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    res = run_cli("predict", str(folder), "-m", str(onnx_model), "-o", str(tmp_path / "out"), "--ray", "-b", "4",
                  "--save-probs", "--overlay", env=env)  # fmt: skip
    assert res.returncode == 1 and "broken.jpg" in res.stderr, res.stderr[-3000:]  # 1: an input failed
    assert re.search(rf"^{N_GOOD} segmented, 0 already done, 1 failed in .* with onnxruntime on Ray", res.stdout), res.stdout
    _same_outputs(tmp_path / "out", reference)


@needs_ray
def test_scaling_benchmark_runs_on_ray(ray_cluster, onnx_model, isic_val, tmp_path):
    """benchmarks/scaling.py --engine ray, on CPU workers of this module's cluster (a check of the script, not a
    measurement): both device counts segment every image, with the same masks, and the ratio is reported."""
    from conftest import REPO

    out = tmp_path / "scaling.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scaling.py"), "--images", str(isic_val / "images"),
                          "--limit", "4", "--copies", "2", "--device", "cpu", "--engine", "ray", "--batch", "4",
                          "--model", str(onnx_model), "--json", str(out)],
                         capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ray_cluster}, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.startswith("engine: ray") and "[ray] ratio 2 over 1:" in res.stdout, res.stdout
    result = json.loads(out.read_text())
    assert [(r["engine"], r["devices"], r["images"], r["masks_identical_to_first"]) for r in result["rows"]] == [("ray", 1, 8, 8), ("ray", 2, 8, 8)]
    assert result["environment"]["engine"] == "ray" and "2_over_1" in result["environment"]["ratio"]


def test_without_ray_the_error_names_the_extra(onnx_model, folder, tmp_path):
    """On an install without the extra (a stub package raising ModuleNotFoundError shadows ray): one line, exit 2."""
    (tmp_path / "block" / "ray").mkdir(parents=True)
    (tmp_path / "block" / "ray" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "block"), *sys.path])}
    res = run_cli("predict", str(folder), "-m", str(onnx_model), "-o", str(tmp_path / "out"), "--ray", env=env)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "pip install 'ultralbm-edge[ray]'" in errors[0]
    assert not (tmp_path / "out").exists()  # refused before the output folder is touched


def test_help_names_the_extra():
    """The extra's name survives the help's markup (rich reads a bare [ray] as a style and drops it)."""
    res = run_cli("predict", "--help", env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0 and "pip install 'ultralbm-edge[ray]'" in res.stdout, res.stdout
