"""What the worker does, in domain terms. No grpc or protobuf here."""

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


class WorkerService:
    """Facts about this worker and its devices."""

    def __init__(self, worker_id: str, probe: DeviceProbe, nvml: Nvml) -> None:
        self._worker_id = worker_id
        self._probe = probe
        self._nvml = nvml
        self._started_wall_ms = int(time.time() * 1000)
        self._started_monotonic = time.monotonic()
        self._dtypes: dict[str, list[str]] = {}
        self._load_source: Callable[[str], DeviceLoad] | None = None
        self.metrics_port = 0

    def set_supported_dtypes(self, dtypes: dict[str, list[str]]) -> None:
        """Data types each device can load models in, by device id."""
        self._dtypes = dtypes

    def supported_dtypes(self, device_id: str) -> list[str]:
        return self._dtypes.get(device_id, [])

    def set_load_source(self, source: Callable[[str], DeviceLoad]) -> None:
        """Where to read a device's running and queued jobs from (its queue)."""
        self._load_source = source

    def load(self, device_id: str) -> DeviceLoad:
        return self._load_source(device_id) if self._load_source else DeviceLoad(0, 0, 0)

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
            started_at_unix_ms=self._started_wall_ms,
            uptime_seconds=time.monotonic() - self._started_monotonic,
            python_version=platform.python_version(),
            torch_version=torch.__version__,
            cuda_available=cuda_count > 0,
            device_count=cuda_count + 1,
            nvml_available=self._nvml.available,
            metrics_port=self.metrics_port,
        )
