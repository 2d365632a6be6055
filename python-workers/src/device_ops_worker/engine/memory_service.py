"""Device memory: what the allocator and the device report, and clearing."""

from __future__ import annotations

from dataclasses import dataclass

from ..devices.nvml import Nvml
from .compute_devices import ComputeDevice, ComputeDevices
from .model_manager import ModelManager


@dataclass(frozen=True)
class DeviceMemoryReport:
    device_id: str
    allocated_bytes: int | None
    reserved_bytes: int | None
    used_bytes: int | None
    total_bytes: int | None
    models: list[tuple[str, int]]


@dataclass(frozen=True)
class ClearReport:
    freed_bytes: int
    unloaded_models: list[str]


class MemoryService:
    def __init__(self, devices: ComputeDevices, manager: ModelManager, nvml: Nvml) -> None:
        self._devices = devices
        self._manager = manager
        self._nvml = nvml

    def _selected(self, device_id: str) -> list[ComputeDevice]:
        return [self._devices.get(device_id)] if device_id else list(self._devices)

    def _report(self, device: ComputeDevice) -> DeviceMemoryReport:
        free, total = device.free_and_total()
        used: int | None = total - free
        if device.is_cuda:
            # NVML counts every process on the GPU, which cudaMemGetInfo also does;
            # prefer NVML's figure when it is there.
            reading = self._nvml.memory(device.id)
            if reading is not None:
                used, total = reading
        return DeviceMemoryReport(
            device_id=device.id,
            allocated_bytes=device.allocated_bytes(),
            reserved_bytes=device.reserved_bytes(),
            used_bytes=used,
            total_bytes=total,
            models=[(p.model, p.footprint_bytes) for p in self._manager.placements() if p.device_id == device.id],
        )

    async def status(self, device_id: str) -> list[DeviceMemoryReport]:
        return [await device.queue.run_now(lambda d=device: self._report(d)) for device in self._selected(device_id)]

    async def clear(self, device_id: str, unload_idle: bool) -> ClearReport:
        freed = 0
        unloaded: list[str] = []
        for device in self._selected(device_id):
            device_freed, names = await device.queue.run_now(lambda d=device: self._clear(d, unload_idle))
            freed += device_freed
            unloaded += names
        return ClearReport(freed_bytes=freed, unloaded_models=unloaded)

    def _clear(self, device: ComputeDevice, unload_idle: bool) -> tuple[int, list[str]]:
        """Measured: reserved bytes before minus after on CUDA; on the CPU, where
        there is no allocator cache, the footprints of the models unloaded."""
        before = device.reserved_bytes()
        footprints = {p.model: p.footprint_bytes for p in self._manager.placements() if p.device_id == device.id}
        names = self._manager.unload_idle(device.id) if unload_idle else []
        device.release_cache()
        after = device.reserved_bytes()
        if before is not None and after is not None:
            return max(before - after, 0), names
        return sum(footprints[name] for name in names), names
