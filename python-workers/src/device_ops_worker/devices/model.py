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
class CudaDetails:
    index: int
    uuid: str | None
    compute_capability: str
    multiprocessor_count: int | None
    utilization_percent: int | None
    memory_utilization_percent: int | None
    temperature_celsius: float | None
    power_watts: float | None
    power_limit_watts: float | None
    driver_version: str | None
    cuda_runtime_version: str | None


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
