"""Device discovery: CUDA through PyTorch and NVML, the CPU through psutil."""

from .device_types import CpuDetails, CudaDetails, Device, DeviceKind, DeviceMemory
from .probe import DeviceProbe

__all__ = ["CpuDetails", "CudaDetails", "Device", "DeviceKind", "DeviceMemory", "DeviceProbe"]
