"""What the worker reports about itself and its devices, in domain terms.
No grpc or protobuf here."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import __version__
from .devices import Device, DeviceProbe
from .devices.nvml import Nvml


@dataclass(frozen=True)
class DeviceLoad:
    running: int
    queued: int
    capacity: int


@dataclass(frozen=True)
class StartTime:
    unix_ms: int
    monotonic: float

    @classmethod
    def now(cls) -> StartTime:
        return cls(unix_ms=int(time.time() * 1000), monotonic=time.monotonic())


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    version: str
    pid: int
    hostname: str
    started_at_unix_ms: int
    uptime_seconds: float
    python_version: str
    torch_version: str
    cuda_available: bool
    device_count: int
    nvml_available: bool
    metrics_port: int


class WorkerInfoService:
    """Facts about this worker and its devices (GetWorkerInfo, ListDevices)."""

    def __init__(
        self,
        worker_id: str,
        probe: DeviceProbe,
        nvml: Nvml,
        *,
        started: StartTime,
        supported_dtypes: dict[str, list[str]],
        device_load: Callable[[str], DeviceLoad],
        metrics_port: int,
    ) -> None:
        self._worker_id = worker_id
        self._probe = probe
        self._nvml = nvml
        self._started = started
        # Data types each device can load models in, by device id.
        self._dtypes = supported_dtypes
        # A device's running and queued jobs, read from its queue.
        self._device_load = device_load
        self._metrics_port = metrics_port

    def supported_dtypes(self, device_id: str) -> list[str]:
        return self._dtypes.get(device_id, [])

    def load(self, device_id: str) -> DeviceLoad:
        return self._device_load(device_id)

    async def list_devices(self) -> list[Device]:
        # torch and NVML calls block; keep them off the event loop.
        return await asyncio.to_thread(self._probe.list_devices)

    async def worker_info(self) -> WorkerInfo:
        cuda_count = await asyncio.to_thread(self._probe.cuda_device_count)
        return WorkerInfo(
            worker_id=self._worker_id,
            version=__version__,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at_unix_ms=self._started.unix_ms,
            uptime_seconds=time.monotonic() - self._started.monotonic,
            python_version=platform.python_version(),
            torch_version=torch.__version__,
            cuda_available=cuda_count > 0,
            device_count=cuda_count + 1,
            nvml_available=self._nvml.available,
            metrics_port=self._metrics_port,
        )
