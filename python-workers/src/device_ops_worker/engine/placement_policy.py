"""Where a job or a load goes, and in which dtype.

Device: the one asked for; else a device where the model is already
resident (shortest queue first); else the CUDA device with the most free
memory; else the CPU. Dtype: the one asked for (if the device supports it);
else the resident placement's; else the manifest's preferred dtype where
supported; else the device's default.
"""

from __future__ import annotations

import torch

from ..errors import FailedPreconditionError, InvalidArgumentError
from ..handlers.torch_support import dtype_name, parse_dtype
from ..model_entry import ModelEntry, ValidationState
from ..models.repository import ModelRepository
from .compute_devices import ComputeDevice, ComputeDevices
from .model_manager import ModelManager


class PlacementPolicy:
    def __init__(self, repository: ModelRepository, manager: ModelManager, devices: ComputeDevices) -> None:
        self._repository = repository
        self._manager = manager
        self._devices = devices

    def device_for(self, entry: ModelEntry | None, device_id: str) -> ComputeDevice:
        if device_id:
            return self._devices.get(device_id)
        if entry is None:
            return self._devices.cpu()
        resident = [self._devices.get(p.device_id) for p in self._manager.placements_of(entry.name)]
        if resident:
            return min(resident, key=lambda d: d.queue.depth)
        cuda = self._devices.cuda()
        if cuda:
            return max(cuda, key=lambda d: d.free_and_total()[0])
        return self._devices.cpu()

    def dtype_for(self, entry: ModelEntry, device: ComputeDevice, requested: str) -> torch.dtype:
        supported = device.supported_dtypes()
        if requested:
            dtype = parse_dtype(requested)
            if dtype not in supported:
                names = ", ".join(dtype_name(d) for d in supported)
                raise InvalidArgumentError(f"dtype: {requested} is not supported on {device.id} ({names})")
            return dtype
        resident = next((p for p in self._manager.placements_of(entry.name) if p.device_id == device.id), None)
        if resident is not None:
            return parse_dtype(resident.dtype)
        preferred = entry.manifest.dtype if entry.manifest else None
        if preferred and parse_dtype(preferred) in supported:
            return parse_dtype(preferred)
        return device.default_dtype()

    def ensure_valid(self, entry: ModelEntry) -> None:
        """Checksums, headers and pickle refusal are checked before a first load
        (blocking: call on a device thread or off the event loop)."""
        if self._repository.validation_state(entry.name) is ValidationState.VALID:
            return
        report = self._repository.validate(entry.name)
        if not report.valid:
            raise FailedPreconditionError(f"model: '{entry.name}' failed validation: {'; '.join(report.problems[:5])}")
