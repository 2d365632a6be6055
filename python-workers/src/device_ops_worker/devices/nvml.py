"""Optional NVML readings. Every reading is ``None`` when NVML is absent or the
board does not support it; NVML is never required."""

from __future__ import annotations

import logging
import threading

from .device_types import NvmlReading

log = logging.getLogger(__name__)


class Nvml:
    """A lazily initialised NVML session shared by the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._module = None
        self._tried = False

    def _nvml(self):  # noqa: ANN202 - pynvml has no types
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    self._module = pynvml
                except Exception as exc:  # NVML missing: no driver, no GPU, container without it
                    log.info("NVML not available; GPU utilization, temperature and power will be null", extra={"reason": str(exc)})
            return self._module

    @property
    def available(self) -> bool:
        return self._nvml() is not None

    def shutdown(self) -> None:
        with self._lock:
            if self._module is not None:
                try:
                    self._module.nvmlShutdown()
                except Exception:  # already shut down
                    pass
            self._module = None

    def memory(self, uuid: str) -> tuple[int, int] | None:
        """(used, total) bytes of the GPU with this UUID, every process counted."""
        nvml = self._nvml()
        if nvml is None:
            return None
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByUUID(uuid))
        except nvml.NVMLError:
            return None
        return int(info.used), int(info.total)

    def read(self, uuid: str | None, pci_bus_id: str | None) -> NvmlReading | None:
        """Readings for the GPU with this UUID (or PCI bus id), ``None`` without NVML."""
        nvml = self._nvml()
        if nvml is None:
            return None
        try:
            if uuid:
                handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
            elif pci_bus_id:
                handle = nvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
            else:
                return None
        except nvml.NVMLError as exc:
            log.warning("NVML has no handle for a CUDA device", extra={"uuid": uuid, "reason": str(exc)})
            return None

        def attempt(read):  # noqa: ANN001, ANN202
            try:
                return read()
            except nvml.NVMLError:
                return None

        util = attempt(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        power_mw = attempt(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        limit_mw = attempt(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
        temperature = attempt(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        driver = attempt(nvml.nvmlSystemGetDriverVersion)
        return NvmlReading(
            uuid=attempt(lambda: nvml.nvmlDeviceGetUUID(handle)),
            utilization_percent=None if util is None else int(util.gpu),
            memory_utilization_percent=None if util is None else int(util.memory),
            temperature_celsius=None if temperature is None else float(temperature),
            power_watts=None if power_mw is None else power_mw / 1000.0,
            power_limit_watts=None if limit_mw is None else limit_mw / 1000.0,
            driver_version=None if driver is None else str(driver),
        )
