"""The devices work can be placed on, each with its queue, and their memory
as the allocator and the machine report it."""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil
import torch

from ..devices import Device, DeviceKind
from ..errors import NotFoundError
from ..handlers.torch_support import release_cached_memory, supported_dtypes
from .device_queue import DeviceQueue


@dataclass
class ComputeDevice:
    id: str
    kind: DeviceKind
    torch_device: torch.device
    queue: DeviceQueue
    _dtypes: tuple[torch.dtype, ...] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_cuda(self) -> bool:
        return self.kind is DeviceKind.CUDA

    def free_and_total(self) -> tuple[int, int]:
        """Bytes that can still be allocated, and the total."""
        if self.is_cuda:
            free, total = torch.cuda.mem_get_info(self.torch_device)
            return int(free), int(total)
        memory = psutil.virtual_memory()
        return int(memory.available), int(memory.total)

    def allocated_bytes(self) -> int | None:
        """Bytes held by live tensors (CUDA caching allocator); None on the CPU."""
        return int(torch.cuda.memory_allocated(self.torch_device)) if self.is_cuda else None

    def reserved_bytes(self) -> int | None:
        return int(torch.cuda.memory_reserved(self.torch_device)) if self.is_cuda else None

    def release_cache(self) -> None:
        """Give cached, unused allocator blocks back to the device."""
        release_cached_memory(self.torch_device)

    def default_dtype(self) -> torch.dtype:
        # Half precision where the hardware is built for it; fp32 on CPUs,
        # where fp16 kernels are slow or missing.
        return torch.float16 if self.is_cuda else torch.float32

    def supported_dtypes(self) -> list[torch.dtype]:
        # Asked once: a device's dtypes do not change, and asking CUDA on
        # every request was a quarter of the event loop's time under load
        # (profile on an H200, 256 concurrent embedding requests).
        if self._dtypes is None:
            self._dtypes = tuple(supported_dtypes(self.torch_device))
        return list(self._dtypes)


class ComputeDevices:
    """Devices by id, in ListDevices order (CUDA devices, then the CPU)."""

    def __init__(self, devices: list[ComputeDevice]) -> None:
        self._by_id = {device.id: device for device in devices}
        self._ordered = devices

    @classmethod
    def from_probe(
        cls, devices: list[Device], *, max_pending: int, max_batch_rows: int, max_batch_delay_s: float, on_wait=None
    ) -> ComputeDevices:
        compute = []
        for device in devices:
            torch_device = (
                torch.device("cuda", device.cuda.index) if device.kind is DeviceKind.CUDA and device.cuda else torch.device("cpu")
            )
            queue = DeviceQueue(device.id, max_pending, max_batch_rows, max_batch_delay_s, on_wait)
            compute.append(ComputeDevice(device.id, device.kind, torch_device, queue))
        return cls(compute)

    def __iter__(self):
        return iter(self._ordered)

    def get(self, device_id: str) -> ComputeDevice:
        device = self._by_id.get(device_id)
        if device is None:
            known = ", ".join(self._by_id)
            raise NotFoundError(f"device_id: no device '{device_id}' on this worker (devices: {known})")
        return device

    def cuda(self) -> list[ComputeDevice]:
        return [device for device in self._ordered if device.is_cuda]

    def cpu(self) -> ComputeDevice:
        return next(device for device in self._ordered if not device.is_cuda)
