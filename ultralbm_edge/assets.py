"""Files that ship inside the package: the bundled checkpoints and the sample images with expert masks.

Torch-free and import-free on purpose: the runtime, the exporters and the CLI all find bundled files here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"
SAMPLES_DIR = PACKAGE_DIR / "samples"  # images/ and masks/: real ISIC 2017 and PH2 pairs (see its README)
SAMPLE_IMAGES = SAMPLES_DIR / "images"
# The model every command uses when none is named.
DEFAULT_MODEL = "ultralbm"
