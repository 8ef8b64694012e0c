"""ultralbm-edge: UltraLBM-UNet from training checkpoint to point-of-care device.

Importing this package imports no torch: ``ultralbm_edge.runtime`` (the device runtime) lives inside it and must
stay thin. Model, export and training code import torch in their own modules.
"""

import os

__version__ = "0.1.0"

# ONNX Runtime (1.32 on Linux) records usage telemetry in ~/.cache/Microsoft/DeveloperTools and $TMPDIR/.ses on
# every session. A clinical tool writes nothing outside the folders it is given; the variable must be set before
# ONNX Runtime creates its environment, and this package is imported before any of its modules.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
