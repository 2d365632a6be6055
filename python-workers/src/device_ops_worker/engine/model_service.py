"""Model management: list, validate, load and unload, in domain terms."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..errors import NotFoundError
from ..model_entry import ModelEntry, ValidationReport, ValidationState
from ..models.repository import ModelRepository
from .compute_devices import ComputeDevices
from .model_manager import ModelManager, PlacementInfo
from .placement_policy import PlacementPolicy


@dataclass(frozen=True)
class ModelStatus:
    entry: ModelEntry
    validation: ValidationState
    placements: list[PlacementInfo]
    preferred_dtype: str


class ModelService:
    def __init__(
        self,
        repository: ModelRepository,
        manager: ModelManager,
        devices: ComputeDevices,
        policy: PlacementPolicy,
    ) -> None:
        self._repository = repository
        self._manager = manager
        self._devices = devices
        self._policy = policy

    def _status(self, entry: ModelEntry) -> ModelStatus:
        preferred = entry.manifest.dtype if entry.manifest and entry.manifest.dtype else ""
        return ModelStatus(
            entry=entry,
            validation=self._repository.validation_state(entry.name),
            placements=self._manager.placements_of(entry.name),
            preferred_dtype=preferred,
        )

    async def list_models(self) -> list[ModelStatus]:
        entries = await asyncio.to_thread(self._repository.list)
        return [self._status(entry) for entry in entries]

    async def validate(self, name: str) -> tuple[ModelStatus, ValidationReport]:
        entry = await asyncio.to_thread(self._repository.get, name)
        # Hashing gigabytes blocks: keep it off the event loop.
        report = await asyncio.to_thread(self._repository.validate, name)
        return self._status(entry), report

    async def load(self, name: str, device_id: str, dtype: str) -> tuple[PlacementInfo, bool]:
        """Place a model (validating it first); returns (placement, already_loaded)."""
        entry = await asyncio.to_thread(self._repository.get, name)
        device = self._policy.device_for(entry, device_id)
        torch_dtype = self._policy.dtype_for(entry, device, dtype)
        self._manager.pin(entry.name, device.id)
        try:
            _, loaded_now = await device.queue.run_now(
                lambda: self._manager.acquire(entry, device, torch_dtype, before_load=self._policy.ensure_valid)
            )
        finally:
            self._manager.unpin(entry.name, device.id)
        placement = next(p for p in self._manager.placements_of(entry.name) if p.device_id == device.id)
        return placement, not loaded_now

    async def unload(self, name: str, device_id: str) -> int:
        """Unload from one device, or from every device when device_id is empty; bytes freed."""
        entry = await asyncio.to_thread(self._repository.get, name)
        placements = self._manager.placements_of(entry.name)
        if device_id:
            self._devices.get(device_id)
            placements = [p for p in placements if p.device_id == device_id]
        if not placements:
            where = f" on {device_id}" if device_id else ""
            raise NotFoundError(f"model: '{entry.name}' is not loaded{where}")
        freed = 0
        for placement in placements:
            device = self._devices.get(placement.device_id)
            freed += await device.queue.run_now(lambda d=device: self._manager.unload(entry.name, d.id))
        return freed

