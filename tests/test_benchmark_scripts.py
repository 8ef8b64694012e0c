"""The scaling benchmarks the GPU machine runs (benchmarks/scaling.py, benchmarks/ddp_scaling.py), checked on the
CPU with tiny inputs so that they are known to run there: their logic, outputs and JSON, not their numbers."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import DATA, REPO


def _script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def test_scaling_with_processes(onnx_model, isic_val, tmp_path):
    """--engine processes: one predict process per device over disjoint halves; images/s over the union."""
    out = tmp_path / "scaling.json"
    res = _script("scaling.py", "--images", str(isic_val / "images"), "--limit", "4", "--copies", "2", "--device", "cpu",
                  "--engine", "processes", "--batch", "4", "--model", str(onnx_model), "--json", str(out))  # fmt: skip
    assert res.stdout.startswith("engine: processes") and "[processes] ratio 2 over 1:" in res.stdout, res.stdout
    result = json.loads(out.read_text())
    rows = [(r["engine"], r["devices"], r["images"], r["masks_identical_to_first"]) for r in result["rows"]]
    assert rows == [("processes", 1, 8, 8), ("processes", 2, 8, 8)]
    assert result["environment"]["engine"] == "processes" and result["rows"][1]["img_s"] > 0
