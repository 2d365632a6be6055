"""Build and run the worker's gRPC server: the worker's composition root."""

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

from .auth_interceptor import TokenAuthInterceptor
from .devices import DeviceProbe
from .devices.nvml import Nvml
from .engine.compute_devices import ComputeDevices
from .engine.inference_service import InferenceService
from .engine.job_journal import Retention
from .engine.memory_service import MemoryService
from .engine.model_manager import ModelManager
from .engine.model_service import ModelService
from .engine.placement_policy import PlacementPolicy
from .handlers.base import LoadOptions
from .handlers.torch_support import dtype_name
from .interceptors import ErrorMappingInterceptor
from .metrics import WorkerMetrics
from .models.repository import ModelRepository
from .servicer import WorkerServicer
from .settings import Settings, TlsSettings
from .worker_info_service import DeviceLoad, StartTime, WorkerInfoService

log = logging.getLogger(__name__)

SERVICE_NAME = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
# Exit status after a device failure, so a supervisor restarts the worker.
EXIT_DEVICE_FAILURE = 70

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


def _interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    # Authentication first: a refused call never reaches the error mapping or the servicer.
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorMappingInterceptor()]
    if settings.worker_token is not None:
        interceptors.insert(0, TokenAuthInterceptor(settings.worker_token))
    return interceptors


def _server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.mutual,
    )


def _bind(server: grpc.aio.Server, settings: Settings) -> int:
    address = f"{settings.host}:{settings.port}"
    if settings.tls is None:
        return server.add_insecure_port(address)
    try:
        return server.add_secure_port(address, _server_credentials(settings.tls))
    except RuntimeError as exc:
        # gRPC says only "failed to bind"; a key that does not match the certificate is the usual cause.
        raise OSError(f"{exc} (check that WORKER_TLS_KEY matches WORKER_TLS_CERT)") from None


class ServingState:
    """What health reports and why the worker stops. Built before the engine,
    whose device-failure hook it is, and shared with the running server."""

    def __init__(self, health_servicer: health.aio.HealthServicer) -> None:
        self.health = health_servicer
        self.stop_requested = asyncio.Event()
        self.device_failure: BaseException | None = None

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def fail_device(self, error: BaseException) -> None:
        """A device became unusable: stop serving now and exit so we are restarted."""
        if self.device_failure is None:
            self.device_failure = error
            asyncio.get_running_loop().create_task(self.set_serving(False))
            self.stop_requested.set()


@dataclass
class RunningServer:
    server: grpc.aio.Server
    state: ServingState
    port: int
    metrics_port: int
    nvml: Nvml
    devices: ComputeDevices
    inference: InferenceService
    manager: ModelManager
    metrics: WorkerMetrics

    @property
    def health(self) -> health.aio.HealthServicer:
        return self.state.health

    async def stop(self, grace: float) -> None:
        # NOT_SERVING first so callers stop sending, then let in-flight calls finish.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.inference.shutdown()
        for device in self.devices:
            await device.queue.close()
        self.nvml.shutdown()


async def start_server(settings: Settings) -> RunningServer:
    """Start a server on settings.host:settings.port; SERVING once devices were probed."""
    started = StartTime.now()
    nvml = Nvml()
    probe = DeviceProbe(settings.worker_id, nvml)
    # Ready means the device probe works: a broken CUDA install fails here,
    # before the worker ever says SERVING. torch and NVML calls block.
    probed = await asyncio.to_thread(probe.list_devices)

    metrics = WorkerMetrics(settings.worker_id)
    devices = ComputeDevices.from_probe(
        probed,
        max_pending=settings.max_queue_per_device,
        max_batch_rows=settings.max_batch_size,
        max_batch_delay_s=settings.max_batch_delay_ms / 1000,
        on_wait=metrics.waited,
    )
    settings.model_directory.mkdir(parents=True, exist_ok=True)
    settings.output_directory.mkdir(parents=True, exist_ok=True)
    repository = ModelRepository(settings.model_directory, settings.allow_pickle_models)
    manager = ModelManager(
        devices,
        max_loaded=settings.max_loaded_models,
        memory_fraction=settings.device_memory_fraction,
        load_options=LoadOptions(
            allow_pickle=settings.allow_pickle_models, cuda_graphs=settings.embedding_cuda_graphs
        ),
    )
    policy = PlacementPolicy(repository, manager, devices)
    state = ServingState(health.aio.HealthServicer())
    inference = InferenceService(
        repository=repository,
        manager=manager,
        policy=policy,
        output_root=settings.output_directory,
        limits=settings.limits,
        progress_interval_s=settings.progress_interval_ms / 1000,
        retention=Retention(
            seconds=settings.job_retention_seconds,
            max_ended_jobs=settings.max_retained_jobs,
            progress_events=settings.max_retained_progress_events,
        ),
        observer=metrics,
        on_device_failure=state.fail_device,
    )
    models = ModelService(repository, manager, devices, policy)
    memory = MemoryService(devices, manager, nvml)
    metrics.watch(devices, manager, nvml)

    server = grpc.aio.server(interceptors=_interceptors(settings), options=SERVER_OPTIONS)
    port = _bind(server, settings)
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    metrics_port = metrics.serve(settings.host, settings.metrics_port) if settings.metrics_port >= 0 else 0
    # Built once the metrics port is known, which GetWorkerInfo reports.
    worker_info = WorkerInfoService(
        settings.worker_id,
        probe,
        nvml,
        started=started,
        supported_dtypes={d.id: [dtype_name(t) for t in d.supported_dtypes()] for d in devices},
        device_load=lambda device_id: DeviceLoad(
            running=devices.get(device_id).queue.running,
            queued=devices.get(device_id).queue.depth,
            capacity=devices.get(device_id).queue.capacity,
        ),
        metrics_port=metrics_port,
    )
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        WorkerServicer(worker_info, models, inference, memory), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(state.health, server)
    for device in devices:
        device.queue.start()

    running = RunningServer(
        server=server,
        state=state,
        port=port,
        metrics_port=metrics_port,
        nvml=nvml,
        devices=devices,
        inference=inference,
        manager=manager,
        metrics=metrics,
    )
    await state.set_serving(False)
    await server.start()
    await state.set_serving(True)
    log.info(
        "worker serving",
        extra={
            "port": port,
            "metricsPort": metrics_port,
            "host": settings.host,
            "tls": "mutual" if settings.tls and settings.tls.mutual else "server" if settings.tls else "off",
            "tokenRequired": settings.worker_token is not None,
            "devices": [d.id for d in probed],
            "modelDirectory": str(settings.model_directory),
        },
    )
    return running


def _announce_ready(fd: int, port: int, metrics_port: int) -> None:
    with os.fdopen(fd, "w") as pipe:
        pipe.write(json.dumps({"port": port, "metricsPort": metrics_port}) + "\n")


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # A supervisor killed with SIGKILL cannot stop us; do not outlive it.
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("supervisor process is gone; stopping", extra={"parentPid": parent_pid})
            stop.set()
            return
        await asyncio.sleep(1.0)


async def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or a device failure (exit 70)."""
    running = await start_server(settings)
    stop = running.state.stop_requested
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.ready_fd is not None:
        _announce_ready(settings.ready_fd, running.port, running.metrics_port)
    watcher = None
    if settings.parent_pid is not None:
        watcher = asyncio.create_task(_watch_parent(settings.parent_pid, stop))

    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    log.info("worker stopping", extra={"graceSeconds": settings.shutdown_grace_seconds})
    await running.stop(settings.shutdown_grace_seconds)
    log.info("worker stopped")
    return EXIT_DEVICE_FAILURE if running.state.device_failure is not None else 0
