"""The worker's Prometheus metrics (prometheus-client), on their own port.

Counters and histograms are updated as jobs finish; device and model gauges
are read at scrape time, so a scrape always shows the present state.
Labels are bounded: task, model (the repository's names), device, outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .devices.nvml import Nvml
from .engine.compute_devices import ComputeDevices
from .engine.inference_service import InferenceObserver
from .engine.model_manager import ModelManager
from .model_entry import Task

log = logging.getLogger(__name__)

PREFIX = "device_ops_worker"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _StateCollector(Collector):
    def __init__(self, worker_id: str, devices: ComputeDevices, manager: ModelManager, nvml: Nvml) -> None:
        self._worker_id = worker_id
        self._devices = devices
        self._manager = manager
        self._nvml = nvml

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs waiting per device (the running batch excluded).", labels=["device"])
        capacity = GaugeMetricFamily(f"{PREFIX}_queue_capacity", "Jobs a device queue holds (MAX_QUEUE_PER_DEVICE).", labels=["device"])
        busy = GaugeMetricFamily(f"{PREFIX}_device_busy", "1 while the device runs a job.", labels=["device"])
        loaded = GaugeMetricFamily(f"{PREFIX}_loaded_models", "Models resident per device.", labels=["device"])
        model_bytes = GaugeMetricFamily(
            f"{PREFIX}_model_memory_bytes", "Measured footprint of each resident model.", labels=["model", "device", "dtype"]
        )
        allocated = GaugeMetricFamily(f"{PREFIX}_allocator_allocated_bytes", "Bytes held by live tensors (CUDA).", labels=["device"])
        reserved = GaugeMetricFamily(f"{PREFIX}_allocator_reserved_bytes", "Bytes the CUDA allocator holds.", labels=["device"])
        gpu_used = GaugeMetricFamily(f"{PREFIX}_gpu_memory_used_bytes", "GPU memory in use, every process (NVML).", labels=["device"])
        gpu_total = GaugeMetricFamily(f"{PREFIX}_gpu_memory_total_bytes", "GPU memory in all (NVML).", labels=["device"])
        util = GaugeMetricFamily(f"{PREFIX}_gpu_utilization_ratio", "GPU busy share over NVML's last sample, 0-1.", labels=["device"])
        temp = GaugeMetricFamily(f"{PREFIX}_gpu_temperature_celsius", "GPU core temperature (NVML).", labels=["device"])
        power = GaugeMetricFamily(f"{PREFIX}_gpu_power_watts", "GPU board power draw (NVML).", labels=["device"])
        placements = self._manager.placements()
        for device in self._devices:
            depth.add_metric([device.id], device.queue.depth)
            capacity.add_metric([device.id], device.queue.capacity)
            busy.add_metric([device.id], 1 if device.queue.busy else 0)
            loaded.add_metric([device.id], sum(1 for p in placements if p.device_id == device.id))
            if not device.is_cuda:
                continue
            allocated.add_metric([device.id], device.allocated_bytes() or 0)
            reserved.add_metric([device.id], device.reserved_bytes() or 0)
            memory = self._nvml.memory(device.id)
            if memory is not None:
                gpu_used.add_metric([device.id], memory[0])
                gpu_total.add_metric([device.id], memory[1])
            reading = self._nvml.read(device.id, None)
            if reading is not None:
                if reading.utilization_percent is not None:
                    util.add_metric([device.id], reading.utilization_percent / 100)
                if reading.temperature_celsius is not None:
                    temp.add_metric([device.id], reading.temperature_celsius)
                if reading.power_watts is not None:
                    power.add_metric([device.id], reading.power_watts)
        for placement in placements:
            model_bytes.add_metric([placement.model, placement.device_id, placement.dtype], placement.footprint_bytes)
        yield from (depth, capacity, busy, loaded, model_bytes, allocated, reserved, gpu_used, gpu_total, util, temp, power)


class WorkerMetrics(InferenceObserver):
    def __init__(self, worker_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            f"{PREFIX}_inference_requests",
            "Inference jobs by task, model and outcome (success, error, cancelled).",
            ["task", "model", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "Time a job ran on its device (queue wait excluded).",
            ["task", "model"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time a job waited in its device queue.",
            ["device"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.refused_calls = Counter(
            f"{PREFIX}_inference_refused",
            "Infer calls refused before acceptance, by status.",
            ["status"],
            registry=self.registry,
        )
        self._worker_id = worker_id

    def watch(self, devices: ComputeDevices, manager: ModelManager, nvml: Nvml) -> None:
        self.registry.register(_StateCollector(self._worker_id, devices, manager, nvml))

    # InferenceObserver
    def finished(self, task: Task, model: str, outcome: str, run_seconds: float | None) -> None:
        self.requests.labels(task.value, model, outcome).inc()
        if run_seconds is not None:
            self.duration.labels(task.value, model).observe(run_seconds)

    def refused(self, status: str) -> None:
        self.refused_calls.labels(status).inc()

    def waited(self, device_id: str, seconds: float) -> None:
        self.queue_wait.labels(device_id).observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the port it listens on."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
