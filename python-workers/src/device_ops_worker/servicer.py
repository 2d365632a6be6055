"""gRPC servicer: converts wire messages to domain calls and back, nothing else.

Rpcs the worker does not implement yet are inherited from the generated base
class, which answers UNIMPLEMENTED.
"""

from __future__ import annotations

import grpc

from device_ops.v1 import devices_pb2, worker_info_pb2, worker_service_pb2_grpc

from .devices import Device, DeviceKind
from .service import WorkerService

_KIND = {
    DeviceKind.CPU: devices_pb2.DEVICE_KIND_CPU,
    DeviceKind.CUDA: devices_pb2.DEVICE_KIND_CUDA,
}


def _device_to_pb(device: Device) -> devices_pb2.Device:
    # Keyword construction skips None, so an unreported value stays absent on
    # the wire (proto3 `optional`) instead of turning into 0.
    def present(**fields: object) -> dict[str, object]:
        return {key: value for key, value in fields.items() if value is not None}

    message = devices_pb2.Device(
        id=device.id,
        kind=_KIND[device.kind],
        name=device.name,
        memory=devices_pb2.DeviceMemory(
            **present(total_bytes=device.memory.total_bytes, free_bytes=device.memory.free_bytes)
        ),
    )
    if device.cuda is not None:
        c = device.cuda
        message.cuda.CopyFrom(
            devices_pb2.CudaDeviceDetails(
                index=c.index,
                compute_capability=c.compute_capability,
                **present(
                    uuid=c.uuid,
                    multiprocessor_count=c.multiprocessor_count,
                    utilization_percent=c.utilization_percent,
                    memory_utilization_percent=c.memory_utilization_percent,
                    temperature_celsius=c.temperature_celsius,
                    power_watts=c.power_watts,
                    power_limit_watts=c.power_limit_watts,
                    driver_version=c.driver_version,
                    cuda_runtime_version=c.cuda_runtime_version,
                ),
            )
        )
    if device.cpu is not None:
        p = device.cpu
        message.cpu.CopyFrom(
            devices_pb2.CpuDeviceDetails(
                architecture=p.architecture,
                torch_threads=p.torch_threads,
                **present(
                    model_name=p.model_name,
                    logical_cores=p.logical_cores,
                    physical_cores=p.physical_cores,
                ),
            )
        )
    return message


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(self, service: WorkerService) -> None:
        self._service = service

    async def GetWorkerInfo(
        self, request: worker_info_pb2.GetWorkerInfoRequest, context: grpc.aio.ServicerContext
    ) -> worker_info_pb2.WorkerInfo:
        info = await self._service.worker_info()
        return worker_info_pb2.WorkerInfo(
            worker_id=info.worker_id,
            version=info.version,
            pid=info.pid,
            hostname=info.hostname,
            started_at_unix_ms=info.started_at_unix_ms,
            uptime_seconds=info.uptime_seconds,
            python_version=info.python_version,
            torch_version=info.torch_version,
            cuda_available=info.cuda_available,
            device_count=info.device_count,
            nvml_available=info.nvml_available,
        )

    async def ListDevices(
        self, request: devices_pb2.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> devices_pb2.ListDevicesResponse:
        devices = await self._service.list_devices()
        return devices_pb2.ListDevicesResponse(devices=[_device_to_pb(d) for d in devices])
