"""The layers are checked by a tool, not by habit: import-linter's contracts in pyproject.toml, on the installed
wheel (where runtime/, export/ and calibration/ sit inside ultralbm_edge/ as a real tree: in the editable
checkout the package-dir mapping hides them from the import graph)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("importlinter", reason="needs import-linter (the [dev] extra)")


def _lint(site: Path, cwd: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), str(REPO / "pyproject.toml")], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_layer_contracts_hold(installed_wheel, tmp_path):
    res = _lint(installed_wheel.parent / "site", tmp_path)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "3 kept, 0 broken" in res.stdout


@pytest.mark.parametrize(
    "module, added, contract",
    [
        ("runtime/metrics.py", "def f():\n    import torch\n", "imports no torch"),  # a lazy import counts too
        ("export/tensorrt.py", "from ultralbm_edge.export import onnx_export\n", "imports no torch"),  # via export
        ("ops/scan.py", "from ultralbm_edge.models import mamba\n", "Layers point one way"),
        ("runtime/files.py", "from ultralbm_edge.runtime import predict\n", "No import cycles"),  # predict -> files
    ],
)
def test_a_broken_contract_is_caught(installed_wheel, tmp_path, module, added, contract):
    site = tmp_path / "site"
    shutil.copytree(installed_wheel.parent / "site", site)
    with open(site / "ultralbm_edge" / module, "a") as f:
        f.write("\n" + added)
    res = _lint(site, tmp_path)
    assert res.returncode != 0 and "BROKEN" in res.stdout
    broken = [line for line in res.stdout.splitlines() if line.rstrip().endswith("BROKEN")]
    assert any(contract in line for line in broken) or contract in res.stdout.split("Contracts:")[0], res.stdout[-3000:]


def test_the_gpu_runner_imports_the_compiler_only_when_compiling():
    """``torch._inductor`` pulls in TorchDynamo and sympy (1.5-4 s of every `predict --device cuda` start): the graph
    runner imports it only for ``--compile`` (checked in a fresh interpreter, where nothing imported it before)."""
    code = (
        "import sys\n"
        "from ultralbm_edge.gpu.graph_runner import _inductor_workarounds\n"
        "with _inductor_workarounds(False):\n"
        "    pass\n"
        "print(sorted(m for m in ('torch._inductor', 'torch._dynamo') if m in sys.modules))\n"
        "with _inductor_workarounds(True):\n"
        "    pass\n"
        "print('torch._inductor' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[:2] == ["[]", "True"], res.stdout
