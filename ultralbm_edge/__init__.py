"""ultralbm-edge: UltraLBM-UNet from training checkpoint to point-of-care device.

Importing this package imports no torch: ``ultralbm_edge.runtime`` (the device runtime) lives inside it and must
stay thin. Model, export and training code import torch in their own modules.
"""

__version__ = "0.1.0"
