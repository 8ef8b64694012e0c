"""Triton's CPU interpreter (``TRITON_INTERPRET=1``) runs the kernels of this package on CPU tensors, slowly:
how they are checked on a machine without a GPU. The kernels' wrappers accept CPU tensors only then."""

from __future__ import annotations

import os


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"
