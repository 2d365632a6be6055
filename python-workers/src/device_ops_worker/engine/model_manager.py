"""Which models are resident where, what they cost, and making room.

Loads run on the target device's thread, so a load never races an inference
on the same device. A model is refused with RESOURCE_EXHAUSTED before any
allocation when its estimated size does not fit (after evicting idle models).
A model with work in flight (pinned) is never evicted.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import FailedPreconditionError, NotFoundError, ResourceExhaustedError
from ..handlers.base import LoadedModel, LoadOptions
from ..handlers.loader import load_model
from ..handlers.torch_support import dtype_name
from ..model_entry import ModelEntry
from ..models.sizing import estimate_load_bytes
from .compute_devices import ComputeDevice, ComputeDevices

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (model name, device id)


def _gib(value: int) -> str:
    return f"{value} bytes ({value / 2**30:.2f} GiB)"


@dataclass
class Placement:
    model: str
    device_id: str
    dtype: torch.dtype
    loaded: LoadedModel
    footprint_bytes: int
    last_used_ms: int


@dataclass(frozen=True)
class PlacementInfo:
    model: str
    device_id: str
    dtype: str
    footprint_bytes: int
    last_used_ms: int
    in_flight: int


class ModelManager:
    def __init__(
        self,
        devices: ComputeDevices,
        *,
        max_loaded: int,
        memory_fraction: float,
        load_options: LoadOptions,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._devices = devices
        self._max_loaded = max_loaded
        self._memory_fraction = memory_fraction
        self._load_options = load_options
        self._on_change = on_change or (lambda: None)
        self._lock = threading.RLock()
        # Least recently used first.
        self._placements: collections.OrderedDict[Key, Placement] = collections.OrderedDict()
        self._pins: collections.Counter[Key] = collections.Counter()

    # ------------------------------------------------------------ pins

    def pin(self, model: str, device_id: str) -> None:
        """Mark work in flight for the model on the device: it will not be evicted."""
        with self._lock:
            self._pins[(model, device_id)] += 1

    def unpin(self, model: str, device_id: str) -> None:
        with self._lock:
            key = (model, device_id)
            self._pins[key] -= 1
            if self._pins[key] <= 0:
                del self._pins[key]

    # ------------------------------------------------------------ queries

    def placements(self) -> list[PlacementInfo]:
        with self._lock:
            return [self._info(p) for p in self._placements.values()]

    def placements_of(self, model: str) -> list[PlacementInfo]:
        return [p for p in self.placements() if p.model == model]

    def _info(self, placement: Placement) -> PlacementInfo:
        return PlacementInfo(
            model=placement.model,
            device_id=placement.device_id,
            dtype=dtype_name(placement.dtype),
            footprint_bytes=placement.footprint_bytes,
            last_used_ms=placement.last_used_ms,
            in_flight=self._pins.get((placement.model, placement.device_id), 0),
        )

    def resident(self, model: str, device_id: str, dtype: torch.dtype) -> LoadedModel | None:
        """The model if it is resident on the device in dtype now; not a use
        (the LRU order is left alone). Any thread."""
        with self._lock:
            placement = self._placements.get((model, device_id))
            return placement.loaded if placement is not None and placement.dtype == dtype else None

    def footprint_on(self, device_id: str) -> int:
        with self._lock:
            return sum(p.footprint_bytes for p in self._placements.values() if p.device_id == device_id)

    # ------------------------------------------------------------ load / use (device thread)

    def acquire(
        self,
        entry: ModelEntry,
        device: ComputeDevice,
        dtype: torch.dtype,
        before_load: Callable[[ModelEntry], None] | None = None,
    ) -> tuple[LoadedModel, bool]:
        """The model resident on the device in dtype, loading it if needed
        (after ``before_load``, e.g. validation). Blocking; call on the device's
        thread. Returns (model, loaded_now)."""
        key = (entry.name, device.id)
        with self._lock:
            placement = self._placements.get(key)
            if placement is not None and placement.dtype == dtype:
                placement.last_used_ms = int(time.time() * 1000)
                self._placements.move_to_end(key)
                return placement.loaded, False
        if before_load is not None:
            before_load(entry)
        if placement is not None:
            # Resident in another dtype: replace it (this thread is the only user on this device).
            self._drop(key)
        return self._load(entry, device, dtype), True

    def _load(self, entry: ModelEntry, device: ComputeDevice, dtype: torch.dtype) -> LoadedModel:
        estimate = estimate_load_bytes(entry, dtype)
        self._make_room(entry.name, device, estimate)
        before = device.allocated_bytes()
        started = time.perf_counter()
        try:
            loaded = load_model(entry, device.torch_device, dtype, self._load_options)
        except torch.OutOfMemoryError:
            device.release_cache()
            free, _ = device.free_and_total()
            raise ResourceExhaustedError(
                f"model '{entry.name}' ran out of memory while loading on {device.id}: "
                f"estimated {_gib(estimate)}, {_gib(free)} free now"
            ) from None
        after = device.allocated_bytes()
        footprint = after - before if after is not None and before is not None else loaded.parameter_bytes()
        with self._lock:
            self._placements[(entry.name, device.id)] = Placement(
                model=entry.name,
                device_id=device.id,
                dtype=dtype,
                loaded=loaded,
                footprint_bytes=footprint,
                last_used_ms=int(time.time() * 1000),
            )
        log.info(
            "model loaded",
            extra={
                "model": entry.name,
                "deviceId": device.id,
                "dtype": dtype_name(dtype),
                "footprintBytes": footprint,
                "estimatedBytes": estimate,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        self._on_change()
        return loaded

    def _make_room(self, model: str, device: ComputeDevice, estimate: int) -> None:
        """Evict least recently used idle models until the new one fits, or refuse."""
        _, total = device.free_and_total()
        budget = int(self._memory_fraction * total)
        while True:
            with self._lock:
                count = len(self._placements)
                used = self.footprint_on(device.id)
            free, _ = device.free_and_total()
            over_count = count + 1 > self._max_loaded
            over_budget = used + estimate > budget
            over_free = estimate > free
            if not (over_count or over_budget or over_free):
                return
            victim = self._eviction_candidate(None if over_count and not (over_budget or over_free) else device.id)
            if victim is None:
                raise ResourceExhaustedError(self._refusal(model, device, estimate, free, used, budget, over_count))
            log.info("evicting idle model to make room", extra={"model": victim[0], "deviceId": victim[1], "for": model})
            self._drop(victim)

    def _refusal(
        self, model: str, device: ComputeDevice, estimate: int, free: int, used: int, budget: int, over_count: bool
    ) -> str:
        if over_count:
            return (
                f"model '{model}' cannot be loaded: MAX_LOADED_MODELS={self._max_loaded} models are resident "
                "and all have work in flight"
            )
        return (
            f"model '{model}' does not fit on {device.id}: needs about {_gib(estimate)}; "
            f"{_gib(free)} free on the device, {_gib(used)} used by models of a budget of {_gib(budget)} "
            f"(DEVICE_MEMORY_FRACTION={self._memory_fraction:g})"
        )

    def _eviction_candidate(self, device_id: str | None) -> Key | None:
        with self._lock:
            for key in self._placements:  # LRU order
                if self._pins.get(key, 0) == 0 and (device_id is None or key[1] == device_id):
                    return key
        return None

    def _drop(self, key: Key) -> int:
        """Forget a placement and free its memory; returns bytes released as measured."""
        with self._lock:
            placement = self._placements.pop(key, None)
        if placement is None:
            return 0
        device = self._devices.get(placement.device_id)
        before = device.allocated_bytes()
        placement.loaded.close()
        del placement.loaded
        device.release_cache()
        after = device.allocated_bytes()
        freed = before - after if before is not None and after is not None else placement.footprint_bytes
        log.info("model unloaded", extra={"model": key[0], "deviceId": key[1], "freedBytes": freed})
        self._on_change()
        return max(freed, 0)

    # ------------------------------------------------------------ management

    def unload(self, model: str, device_id: str) -> int:
        """Unload from one device (device thread). Refused while work is in flight."""
        key = (model, device_id)
        with self._lock:
            if key not in self._placements:
                raise NotFoundError(f"model: '{model}' is not loaded on {device_id}")
            in_flight = self._pins.get(key, 0)
        if in_flight:
            raise FailedPreconditionError(f"model: '{model}' has {in_flight} jobs in flight on {device_id}; retry when they end")
        return self._drop(key)

    def idle_keys(self, device_id: str | None) -> list[Key]:
        with self._lock:
            return [
                key
                for key in self._placements
                if self._pins.get(key, 0) == 0 and (device_id is None or key[1] == device_id)
            ]

    def unload_idle(self, device_id: str) -> list[str]:
        """Unload every model without work in flight on the device (device thread)."""
        unloaded = []
        for key in self.idle_keys(device_id):
            self._drop(key)
            unloaded.append(key[0])
        return unloaded
