"""What every benchmark script ends with: the machine it ran on, printed and saved beside its rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ultralbm_edge.runtime.benchmark import environment
from ultralbm_edge.runtime.files import write_text_atomic


def report(rows: list[dict[str, Any]], json_path: Path | None, **facts: Any) -> None:
    """Print the environment (``runtime.benchmark.environment`` plus ``facts``) and write ``{environment, rows}``."""
    env = {**environment(), **facts}
    print(env)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json_path, json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")


def replicate(folder: Path, copies: int, into: Path) -> Path:
    """``copies`` copies of every image of ``folder`` under new names (a larger set of the same real images)."""
    into.mkdir(parents=True)
    for k in range(copies):
        for p in sorted(folder.glob("*.jpg")):
            shutil.copyfile(p, into / f"{p.stem}_c{k:03d}{p.suffix}")
    return into
