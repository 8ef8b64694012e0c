"""Fused inference kernels in Triton (the scan, the dense conv stages, the conv branches, the upsampling steps).

Each takes tensors and returns tensors; the model layer adapts its modules to them (``models._fused``). Importing
a submodule imports triton, which CUDA builds of PyTorch ship; nothing imports them unless a GPU path runs.
"""
