"""The benchmarks the GPU machine runs (benchmarks/scaling.py, benchmarks/ddp_scaling.py, the provenance peers_gpu.py
records), checked on the CPU with tiny inputs so that they are known to run there: their logic, outputs and JSON, not
their numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import DATA, REPO


def _script(name: str, *args: str, timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def without_ray(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import ray`` fails and find_spec("ray") is None, in this process's children and theirs
    (as on the GPU machine, where the extra is not installed): a sitecustomize that marks ray absent."""
    site = tmp_path / "no_ray"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # import ray: ModuleNotFoundError\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}


def test_scaling_with_processes_where_ray_is_absent(onnx_model, isic_val, tmp_path):
    """--engine auto without Ray: one predict process per device over disjoint halves; images/s over the union."""
    out = tmp_path / "scaling.json"
    res = _script("scaling.py", "--images", str(isic_val / "images"), "--limit", "4", "--copies", "2", "--device", "cpu",
                  "--batch", "4", "--model", str(onnx_model), "--json", str(out), env=without_ray(tmp_path))  # fmt: skip
    assert res.stdout.startswith("engine: processes (Ray is not installed)"), res.stdout
    assert "[processes] ratio 2 over 1:" in res.stdout, res.stdout
    result = json.loads(out.read_text())
    rows = [(r["engine"], r["devices"], r["images"], r["masks_identical_to_first"]) for r in result["rows"]]
    assert rows == [("processes", 1, 8, 8), ("processes", 2, 8, 8)]
    assert result["environment"]["engine"] == "processes" and result["environment"]["ray"] == "not installed"
    shares = result["environment"]["cpus_per_process"]  # each process pinned to its share of the cores
    assert len(shares) == 2 and min(shares) >= 1 and sum(shares) == len(os.sched_getaffinity(0))
    assert result["rows"][1]["img_s"] > 0


def test_ddp_scaling_with_gloo(tmp_path):
    """benchmarks/ddp_scaling.py on the CPU: torchrun with 1 and 2 gloo processes on ISIC images (train) and PH2
    (val) linked into one layout; every epoch timed, world sizes checked from the checkpoints, the ratio reported."""
    out = tmp_path / "ddp.json"
    res = _script("ddp_scaling.py", "--train", str(DATA / "isic2017" / "val"), "--val", str(DATA / "ph2" / "val"),
                  "--limit", "8", "--epochs", "2", "--batch", "2", "--device", "cpu", "--json", str(out),
                  env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert "epoch time 2 over 1:" in res.stdout, res.stdout
    result = json.loads(out.read_text())
    rows = [(r["devices"], r["global_batch"], r["n_train"], r["n_val"], r["images_per_epoch"], len(r["epoch_s"])) for r in result["rows"]]
    assert rows == [(1, 2, 8, 8, 8, 2), (2, 4, 8, 8, 8, 2)]
    env = result["environment"]
    assert env["backend"] == "gloo" and "2_over_1" in env["epoch_time_ratio"] and "not a model to ship" in env["purpose"]
    assert all(0 <= r["val_dsc_last"] <= 1 and r["epoch_s_steady"] == r["epoch_s"][1] for r in result["rows"])


def test_a_peer_copy_inside_another_repository_reports_no_commit(tmp_path):
    """peers_gpu.py records the official code's commit. The GPU machine gets the peers' code as copies inside our
    repository, where plain ``git rev-parse HEAD`` answers with *our* commit (it did once, in a committed result)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _peers import checkout_commit

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    outer = tmp_path / "outer"
    (outer / "peer").mkdir(parents=True)
    (outer / "peer" / "model.py").write_text("x = 1\n")
    subprocess.run([*git, "init", "-q", str(outer)], check=True)
    subprocess.run([*git, "-C", str(outer), "add", "."], check=True)
    subprocess.run([*git, "-C", str(outer), "commit", "-qm", "c"], check=True)
    head = subprocess.run(["git", "-C", str(outer), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert checkout_commit(outer) == head  # a real checkout: its own commit
    assert checkout_commit(outer / "peer") == "unknown (not a git checkout)"  # a copy inside it: not the outer commit
    assert checkout_commit(tmp_path / "missing") == "unknown (not a git checkout)"


def test_pipeline_trace_times_every_task_and_leaves_the_outputs_alone(onnx_model, isic_val, tmp_path):
    """pipeline_trace.py on the CPU path (threads, one image per task): a decode and a write task per image, each
    wait non-negative, and the traced run's masks the same as an untraced run's."""
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.predict import PredictOptions, predict

    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((isic_val / "images").glob("*.jpg"))[:6]:
        (images / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "trace.json"
    _script("pipeline_trace.py", "--model", str(onnx_model), "--images", str(images), "--batch", "4", "--workers", "2", "--runs", "1",
            "--variant", "as shipped:", "--variant", "one worker:workers=1,decode_ahead_batches=1", "--json", str(out))  # fmt: skip
    shipped, one_worker = json.loads(out.read_text())["variants"]
    assert (shipped["name"], shipped["settings"], one_worker["settings"]) == ("as shipped", {}, {"workers": 1, "decode_ahead_batches": 1})
    for variant in (shipped, one_worker):
        (run,) = variant["runs"]
        assert run["images"] == 6 and run["decode"]["tasks"] == run["write"]["tasks"] == 6 and variant["img_s_median"] == run["img_s"]
        for kind in ("decode", "write"):
            assert all(v >= 0 for k, v in run[kind].items() if k.endswith(("_median", "_p90"))), run[kind]
        assert 0 < run["workers_busy_share"] <= 1

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from pipeline_trace import patched, traced_predict
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from ultralbm_edge.runtime import files
    from ultralbm_edge.runtime import predict as predict_module

    shipped_constants = (predict_module._SLOTS_PER_BATCH_IMAGE, predict_module._SLOT_BYTES_RANGE, files._link_unnamed)
    with patched({"slots_per_batch_image": 3, "slot_bytes": 1 << 20, "unnamed_files": 0}):
        assert (predict_module._SLOTS_PER_BATCH_IMAGE, predict_module._SLOT_BYTES_RANGE) == (3, (1 << 20, 1 << 20))
        assert files._link_unnamed(tmp_path / "unnamed.png", b"x") is False and not (tmp_path / "unnamed.png").exists()
        files.write_bytes_atomic(tmp_path / "named.png", b"x")  # through a named temporary file: none left behind
        assert (tmp_path / "named.png").read_bytes() == b"x" and not list(tmp_path.glob(f"{files.TEMP_PREFIX}*"))
    assert (predict_module._SLOTS_PER_BATCH_IMAGE, predict_module._SLOT_BYTES_RANGE, files._link_unnamed) == shipped_constants
    backend = open_backend(onnx_model)
    traced, done = traced_predict(images, backend, PredictOptions(batch_size=4, workers=2), tmp_path / "traced")
    assert done == 6 and predict([images], backend, tmp_path / "plain", PredictOptions(batch_size=4, workers=2)).ok == 6
    for mask in (tmp_path / "plain" / "masks").iterdir():
        assert (tmp_path / "traced" / "masks" / mask.name).read_bytes() == mask.read_bytes()
