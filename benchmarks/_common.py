"""What the benchmark scripts share: the report they end with (the machine it ran on, printed and saved beside the
rows), a larger folder of the same real images, and an earlier commit's package to measure against."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ultralbm_edge.runtime.benchmark import environment
from ultralbm_edge.runtime.files import write_text_atomic


def report(rows: list[dict[str, Any]], json_path: Path | None, extra: dict[str, Any] | None = None, **facts: Any) -> None:
    """Print the environment (``runtime.benchmark.environment`` plus ``facts``) and write ``{environment, rows}``
    (plus ``extra``'s entries, saved but not printed)."""
    env = {**environment(), **facts}
    print(env)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json_path, json.dumps({"environment": env, "rows": rows, **(extra or {})}, indent=2) + "\n")


def replicate(folder: Path, copies: int, into: Path) -> Path:
    """``copies`` copies of every image of ``folder`` under new names (a larger set of the same real images)."""
    into.mkdir(parents=True)
    for k in range(copies):
        for p in sorted(folder.glob("*.jpg")):
            shutil.copyfile(p, into / f"{p.stem}_c{k:03d}{p.suffix}")
    return into


ROOT = Path(__file__).resolve().parents[1]


def baseline_package(commit: str, folder: Path) -> Path:
    """The package as it was at ``commit``, installed (no dependencies) into ``folder``/site; returns that folder."""
    src, wheels, site = folder / "src", folder / "wheels", folder / "site"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)], check=True)
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), *map(str, wheels.glob("*.whl"))], check=True)
    return site
