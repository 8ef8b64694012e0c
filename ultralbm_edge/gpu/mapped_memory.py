"""Host memory that GPU kernels read and write directly (pinned and mapped: "zero-copy").

Registered with the CUDA driver as mapped memory, a range of host memory gets a device address; a tensor made on
that address is a CUDA tensor whose bytes live in host RAM, so one batched kernel (``torch.stack``,
``torch._foreach_copy_``) moves a whole batch of images between scattered host buffers and the GPU over the bus,
where per-buffer ``copy_`` calls would cost the calling thread tens of microseconds each.

PyTorch exposes ``cudaHostRegister`` but not ``cudaHostGetDevicePointer``; that one is called through ctypes on the
CUDA runtime library PyTorch has loaded (found in ``/proc/self/maps``, so Linux only). Anywhere this is not possible
``map_host_memory`` says why and the caller copies through pageable memory instead.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

_REGISTER_MAPPED = 0x02  # cudaHostRegisterMapped


class _DeviceArray:
    """A device address and length, as the CUDA array interface PyTorch reads (``torch.as_tensor``)."""

    def __init__(self, address: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (address, False), "version": 2}


def map_host_memory(address: int, nbytes: int, device: torch.device) -> tuple[torch.Tensor | None, str]:
    """``nbytes`` of host memory at ``address`` as a uint8 CUDA tensor on ``device`` (the memory stays registered
    until ``unmap_host_memory``), or None and the reason it could not be mapped."""
    cudart = _runtime_library()
    if cudart is None:
        return None, "the CUDA runtime library PyTorch uses was not found in this process"
    with torch.cuda.device(device):
        err = int(torch.cuda.cudart().cudaHostRegister(address, nbytes, _REGISTER_MAPPED))
        if err != 0:
            return None, f"cudaHostRegister failed (CUDA error {err}; a locked-memory limit?)"
        pointer = ctypes.c_void_p()
        err = cudart.cudaHostGetDevicePointer(ctypes.byref(pointer), ctypes.c_void_p(address), 0)
        if err != 0 or pointer.value is None:
            torch.cuda.cudart().cudaHostUnregister(address)
            return None, f"cudaHostGetDevicePointer failed (CUDA error {err})"
        return torch.as_tensor(_DeviceArray(pointer.value, nbytes), device=device), ""


def unmap_host_memory(address: int, device: torch.device) -> None:
    """Unregister memory mapped by ``map_host_memory``, once the GPU has finished with it."""
    torch.cuda.synchronize(device)
    torch.cuda.cudart().cudaHostUnregister(address)


def _runtime_library() -> ctypes.CDLL | None:
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return None
    for line in maps.read_text().splitlines():
        path = line.split()[-1]
        if Path(path).name.startswith("libcudart.so"):
            library = ctypes.CDLL(path)  # already loaded: the same handle, the same CUDA context
            library.cudaHostGetDevicePointer.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_uint]
            library.cudaHostGetDevicePointer.restype = ctypes.c_int
            return library
    return None
