"""Calibration: INT8 Q/DQ models from a folder of dermoscopy images (ONNX Runtime's quantization tools)."""

from .int8 import METHODS, CalibrationError, CalibrationResult, quantize_int8

__all__ = ["METHODS", "CalibrationError", "CalibrationResult", "quantize_int8"]
