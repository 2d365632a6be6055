"""Build and run the worker's gRPC server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from device_ops.v1 import worker_service_pb2, worker_service_pb2_grpc

from .devices import DeviceProbe
from .devices.nvml import Nvml
from .interceptors import ErrorMappingInterceptor
from .service import WorkerService
from .servicer import WorkerServicer
from .settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name

# Keepalive policy. The gateway pings every 30 s (see gateway/src/infra/grpc);
# the server must allow at least that often or it answers with GOAWAY
# "too_many_pings" and the channel flaps.
SERVER_OPTIONS = [
    # Accept client pings as often as every 10 s, a margin below the client's 30 s.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    # Let idle channels keep pinging; the gateway keeps channels to idle workers warm.
    ("grpc.keepalive_permit_without_calls", 1),
    # Our own pings to detect dead peers on long inference streams.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # Image inputs and tensors can be large; refuse anything beyond 64 MiB.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    nvml: Nvml

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        # NOT_SERVING first so callers stop sending, then let in-flight calls finish.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.nvml.shutdown()


async def start_server(settings: Settings) -> RunningServer:
    """Start a server on settings.host:settings.port; SERVING once devices were probed."""
    nvml = Nvml()
    probe = DeviceProbe(settings.worker_id, nvml)
    service = WorkerService(settings.worker_id, probe, nvml)

    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()], options=SERVER_OPTIONS)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    running = RunningServer(server=server, health=health_servicer, port=port, nvml=nvml)
    await running.set_serving(False)
    await server.start()

    # Ready means the device probe works: a broken CUDA install fails here,
    # before the worker ever says SERVING.
    devices = await service.list_devices()
    await running.set_serving(True)
    log.info(
        "worker serving",
        extra={"port": port, "host": settings.host, "devices": [d.id for d in devices]},
    )
    return running


def _announce_ready(fd: int, port: int) -> None:
    with os.fdopen(fd, "w") as pipe:
        pipe.write(json.dumps({"port": port}) + "\n")


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # A supervisor killed with SIGKILL cannot stop us; do not outlive it.
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("supervisor process is gone; stopping", extra={"parentPid": parent_pid})
            stop.set()
            return
        await asyncio.sleep(1.0)


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    running = await start_server(settings)
    if settings.ready_fd is not None:
        _announce_ready(settings.ready_fd, running.port)
    watcher = None
    if settings.parent_pid is not None:
        watcher = asyncio.create_task(_watch_parent(settings.parent_pid, stop))

    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    log.info("worker stopping", extra={"graceSeconds": settings.shutdown_grace_seconds})
    await running.stop(settings.shutdown_grace_seconds)
    log.info("worker stopped")
