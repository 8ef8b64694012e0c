"""A normal (non-editable) install: the wheel maps export/, runtime/, calibration/ into ultralbm_edge and installs
no top-level module of those names; everything a device runs works with torch absent, and the commands that need
torch say so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from ultralbm_edge.runtime.backends.tensorrt_env import TensorRTError, load_tensorrt

try:
    load_tensorrt()
    HAVE_TRT = True
except TensorRTError:
    HAVE_TRT = False


def test_wheel_layout_is_namespaced(installed_wheel):
    names = zipfile.ZipFile(installed_wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"ultralbm_edge"}
    # Every package folder of the source tree is in the wheel (a forgotten subpackage breaks normal installs).
    for top, target in (("ultralbm_edge", "ultralbm_edge"), ("export", "ultralbm_edge/export"),
                        ("runtime", "ultralbm_edge/runtime"), ("calibration", "ultralbm_edge/calibration")):  # fmt: skip
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.relative_to(REPO / top).as_posix()
            assert f"{target}/{rel}" in names, f"{top}/{rel} is missing from the wheel: list it in pyproject packages"


@pytest.fixture(scope="module")
def torchless_env(installed_wheel, tmp_path_factory) -> dict[str, str]:
    """An environment whose Python finds the installed wheel first and cannot import torch (a stub package that
    raises ModuleNotFoundError shadows it), as on a device that installed only ``ultralbm-edge``."""
    blocker = tmp_path_factory.mktemp("blocker")
    (blocker / "torch").mkdir()
    (blocker / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch' (blocked: a device install)\", name='torch')\n"
    )
    site = installed_wheel.parent / "site"
    return {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{site}"}


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ultralbm_edge", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_torch_is_really_blocked_and_the_wheel_is_what_runs(torchless_env, installed_wheel, tmp_path):
    code = "import ultralbm_edge; print(ultralbm_edge.__file__)\ntry:\n    import torch\nexcept ImportError:\n    print('blocked')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=torchless_env, cwd=tmp_path)
    lines = res.stdout.split()
    assert lines[0].startswith(str(installed_wheel.parent / "site")) and lines[1] == "blocked", res.stderr


def test_device_commands_work_without_torch(torchless_env, onnx_model, exported_scans, isic_val, tmp_path):
    """predict (also with the default model), evaluate, benchmark, calibrate, build-engine and info on .onnx/.engine,
    from the installed wheel."""
    images = isic_val / "images"
    one = sorted(images.glob("*.jpg"))[0]
    commands = [
        ["info", "-m", str(onnx_model)],
        ["predict", str(one), "-m", str(onnx_model), "-o", str(tmp_path / "out")],
        ["predict", str(one), "-o", str(tmp_path / "out-default")],  # the bundled model: its ONNX form, no torch
        ["evaluate", "-m", str(onnx_model), "--data", str(REPO / "ultralbm_edge" / "samples")],
        ["benchmark", "-m", str(onnx_model), "--batch-sizes", "1", "--runs", "2", "--warmup", "1"],
        ["calibrate", "-m", str(onnx_model), "--images", str(images), "--num-images", "8", "-o", str(tmp_path / "q.onnx")],
    ]
    if HAVE_TRT:
        engine = tmp_path / "m.fp16.engine"
        commands += [
            ["build-engine", "-m", str(exported_scans["blelloch"].path), "--precision", "fp16", "-o", str(engine)],
            ["info", "-m", str(engine)],
        ]
    for args in commands:
        res = _run(torchless_env, tmp_path, *args)
        assert res.returncode == 0 and "Traceback" not in res.stderr, (args, res.stdout[-2000:], res.stderr[-3000:])
    assert (tmp_path / "out" / "masks" / f"{one.stem}.png").is_file() and (tmp_path / "q.onnx").is_file()
    assert (tmp_path / "out-default" / "masks" / f"{one.stem}.png").is_file()


@pytest.mark.parametrize(
    "args",
    [["export", "-m", "ultralbm"], ["demo"], ["info", "-m", str(REPO / "ultralbm_edge" / "weights" / "ultralbm.pth")], ["train", "--data", ".", "-o", "run"],
     ["distill", "--teacher", "ultralbm", "--data", ".", "-o", "run"]],
)  # fmt: skip
def test_commands_that_need_torch_say_so_in_one_line(torchless_env, tmp_path, args):
    res = _run(torchless_env, tmp_path, *args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "needs PyTorch" in res.stderr and "ultralbm-edge[torch]" in res.stderr
    assert list(tmp_path.iterdir()) == []
