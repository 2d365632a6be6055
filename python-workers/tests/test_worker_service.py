"""WorkerService and health over the wire, through a real grpc.aio server."""

from __future__ import annotations

import os
import platform

import grpc
import psutil
import pytest
import torch
from grpc_health.v1 import health_pb2

from device_ops.v1 import devices_pb2, worker_info_pb2
from device_ops_worker import __version__

from .conftest import WORKER_ID, Worker


@pytest.mark.parametrize("service", ["", "device_ops.v1.WorkerService"])
async def test_health_reports_serving_once_ready(worker: Worker, service: str) -> None:
    response = await worker.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_turns_not_serving_on_shutdown(worker: Worker) -> None:
    await worker.running.health.enter_graceful_shutdown()
    response = await worker.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_list_devices_reports_the_real_cpu(worker: Worker) -> None:
    response = await worker.stub.ListDevices(devices_pb2.ListDevicesRequest(), timeout=10)
    cpus = [d for d in response.devices if d.kind == devices_pb2.DEVICE_KIND_CPU]
    assert len(cpus) == 1
    cpu = cpus[0]
    assert cpu.id == f"{WORKER_ID}:cpu"
    assert cpu.WhichOneof("details") == "cpu"
    assert cpu.cpu.logical_cores == os.cpu_count()
    assert cpu.cpu.architecture == platform.machine()
    assert cpu.cpu.torch_threads == torch.get_num_threads()
    assert cpu.memory.total_bytes == psutil.virtual_memory().total
    assert list(cpu.supported_dtypes) == ["float32", "bfloat16"]
    assert (cpu.running_jobs, cpu.queued_jobs, cpu.queue_capacity) == (0, 0, 64)
    assert 0 < cpu.memory.free_bytes <= cpu.memory.total_bytes
    # The CPU comes last, after every CUDA device in ordinal order.
    assert response.devices[-1].id == cpu.id


async def test_list_devices_reports_every_cuda_device(worker: Worker) -> None:
    response = await worker.stub.ListDevices(devices_pb2.ListDevicesRequest(), timeout=30)
    cuda = [d for d in response.devices if d.kind == devices_pb2.DEVICE_KIND_CUDA]
    expected = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert len(cuda) == expected
    for index, device in enumerate(cuda):
        props = torch.cuda.get_device_properties(index)
        assert device.cuda.index == index
        assert device.name == props.name
        assert device.cuda.compute_capability == f"{props.major}.{props.minor}"
        assert device.memory.total_bytes == torch.cuda.mem_get_info(index)[1]
        assert device.id.startswith("GPU-")


async def test_unreported_values_are_absent_not_zero(worker: Worker) -> None:
    response = await worker.stub.ListDevices(devices_pb2.ListDevicesRequest(), timeout=10)
    cpu = next(d for d in response.devices if d.kind == devices_pb2.DEVICE_KIND_CPU)
    assert not cpu.HasField("cuda")
    # Presence is explicit: a present field is a reading, not a default.
    assert cpu.memory.HasField("total_bytes")
    assert cpu.cpu.HasField("logical_cores")


async def test_get_worker_info(worker: Worker) -> None:
    info = await worker.stub.GetWorkerInfo(worker_info_pb2.GetWorkerInfoRequest(), timeout=10)
    devices = await worker.stub.ListDevices(devices_pb2.ListDevicesRequest(), timeout=10)
    assert info.worker_id == WORKER_ID
    assert info.version == __version__
    assert info.pid == os.getpid()
    assert info.torch_version == torch.__version__
    assert info.python_version == platform.python_version()
    assert info.device_count == len(devices.devices)
    assert info.cuda_available == torch.cuda.is_available()
    assert info.uptime_seconds >= 0
    assert info.started_at_unix_ms > 0
