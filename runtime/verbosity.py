"""How much the libraries underneath may print. ONNX Runtime's and TensorRT's loggers warn about internals a user
cannot act on (removed initializers, tactic choices), so they stay quiet unless asked for (the CLI's ``-v``)."""

from __future__ import annotations

_verbose = False


def set_verbose(on: bool) -> None:
    global _verbose
    _verbose = on


def verbose() -> bool:
    return _verbose


def ort_log_severity() -> int:
    """ONNX Runtime's severity threshold: 1 (info) when verbose, else 3 (errors only)."""
    return 1 if _verbose else 3
