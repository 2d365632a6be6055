"""Domain types for devices. ``None`` means the machine did not report it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DeviceKind(enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class DeviceMemory:
    total_bytes: int | None
    free_bytes: int | None


@dataclass(frozen=True)
class NvmlReading:
    """What NVML reports of one board; each field ``None`` where it does not."""

    uuid: str | None = None
    utilization_percent: int | None = None
    memory_utilization_percent: int | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    driver_version: str | None = None


# A board NVML did not answer for (or a machine without NVML).
NO_NVML_READING = NvmlReading()


@dataclass(frozen=True)
class CudaDetails:
    index: int
    uuid: str | None
    compute_capability: str
    multiprocessor_count: int | None
    cuda_runtime_version: str | None
    nvml: NvmlReading = NO_NVML_READING


@dataclass(frozen=True)
class CpuDetails:
    model_name: str | None
    logical_cores: int | None
    physical_cores: int | None
    architecture: str
    torch_threads: int


@dataclass(frozen=True)
class Device:
    id: str
    kind: DeviceKind
    name: str
    memory: DeviceMemory
    cuda: CudaDetails | None = None
    cpu: CpuDetails | None = None
