"""Probe the machine's devices. Blocking: call it off the event loop."""

from __future__ import annotations

import platform
from pathlib import Path

import psutil
import torch

from .device_types import NO_NVML_READING, CpuDetails, CudaDetails, Device, DeviceKind, DeviceMemory
from .nvml import Nvml


def _cpu_model_name() -> str | None:
    """The processor model as the OS names it; ``None`` when it does not."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model name", "Hardware") and value.strip():
                return value.strip()
    return platform.processor() or None


def _torch_uuid(props: object) -> str | None:
    raw = getattr(props, "uuid", None)
    if raw is None:
        return None
    text = str(raw)
    return text if text.startswith("GPU-") else f"GPU-{text}"


class DeviceProbe:
    """Reads CUDA devices from PyTorch (enriched by NVML) and the CPU."""

    def __init__(self, worker_id: str, nvml: Nvml) -> None:
        self._worker_id = worker_id
        self._nvml = nvml
        self._cpu_name = _cpu_model_name()

    @property
    def cpu_device_id(self) -> str:
        return f"{self._worker_id}:cpu"

    def cuda_device_count(self) -> int:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    def list_devices(self) -> list[Device]:
        devices = [self._cuda_device(index) for index in range(self.cuda_device_count())]
        devices.append(self._cpu_device())
        return devices

    def _cuda_device(self, index: int) -> Device:
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        torch_uuid = _torch_uuid(props)
        pci = getattr(props, "pci_bus_id", None)
        reading = self._nvml.read(torch_uuid, pci if isinstance(pci, str) else None)
        uuid = (reading.uuid if reading and reading.uuid else None) or torch_uuid
        details = CudaDetails(
            index=index,
            uuid=uuid,
            compute_capability=f"{props.major}.{props.minor}",
            multiprocessor_count=getattr(props, "multi_processor_count", None),
            cuda_runtime_version=torch.version.cuda,
            nvml=reading or NO_NVML_READING,
        )
        return Device(
            # The UUID survives restarts and renumbering; the ordinal does not.
            id=uuid or f"{self._worker_id}:cuda:{index}",
            kind=DeviceKind.CUDA,
            name=props.name,
            memory=DeviceMemory(total_bytes=int(total), free_bytes=int(free)),
            cuda=details,
        )

    def _cpu_device(self) -> Device:
        memory = psutil.virtual_memory()
        details = CpuDetails(
            model_name=self._cpu_name,
            logical_cores=psutil.cpu_count(logical=True),
            physical_cores=psutil.cpu_count(logical=False),
            architecture=platform.machine(),
            torch_threads=torch.get_num_threads(),
        )
        return Device(
            id=self.cpu_device_id,
            kind=DeviceKind.CPU,
            name=self._cpu_name or f"{platform.machine()} CPU",
            memory=DeviceMemory(total_bytes=int(memory.total), free_bytes=int(memory.available)),
            cpu=details,
        )
