"""The thin, torch-free runtime: preprocessing, backends, postprocessing, batch prediction and benchmarking.

A device needs only numpy, OpenCV and ONNX Runtime (plus tensorrt and cuda-python for engines).
"""
