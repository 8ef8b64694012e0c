"""A normal (non-editable) install: the wheel maps export/, runtime/, calibration/ into ultralbm_edge and
installs no top-level module of those names; the runtime imports without torch."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
    )
    (whl,) = out.glob("ultralbm_edge-*.whl")
    return whl


def test_wheel_layout_is_namespaced(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"ultralbm_edge"}
    # Every package folder of the source tree is in the wheel (a forgotten subpackage breaks normal installs).
    for top, target in (("ultralbm_edge", "ultralbm_edge"), ("export", "ultralbm_edge/export"),
                        ("runtime", "ultralbm_edge/runtime"), ("calibration", "ultralbm_edge/calibration")):  # fmt: skip
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.relative_to(REPO / top).as_posix()
            assert f"{target}/{rel}" in names, f"{top}/{rel} is missing from the wheel: list it in pyproject packages"


def test_installed_wheel_runtime_imports_without_torch(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    # Block torch: any import of it in the runtime path raises ImportError.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import ultralbm_edge, ultralbm_edge.runtime.predict, ultralbm_edge.runtime.backends.onnxruntime_backend\n"
        f"assert ultralbm_edge.__file__.startswith({str(target)!r}), ultralbm_edge.__file__\n"
        "from ultralbm_edge.cli import app\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
