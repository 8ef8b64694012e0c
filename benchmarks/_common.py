"""What every benchmark script ends with: the machine it ran on, printed and saved beside its rows."""

from __future__ import annotations

import json
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
