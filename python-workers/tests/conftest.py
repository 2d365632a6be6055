"""Fixtures: a real grpc.aio worker server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from device_ops.v1 import worker_service_pb2_grpc
from device_ops_worker.server import RunningServer, start_server
from device_ops_worker.settings import LogLevel, Settings

WORKER_ID = "test-worker"


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "worker_id": WORKER_ID,
        "host": "127.0.0.1",
        "port": 0,
        "ready_fd": None,
        "log_level": LogLevel.INFO,
        "shutdown_grace_seconds": 1.0,
        "parent_pid": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Worker:
    running: RunningServer
    channel: grpc.aio.Channel
    stub: worker_service_pb2_grpc.WorkerServiceStub
    health: health_pb2_grpc.HealthStub


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    running = await start_server(make_settings())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Worker(
            running=running,
            channel=channel,
            stub=worker_service_pb2_grpc.WorkerServiceStub(channel),
            health=health_pb2_grpc.HealthStub(channel),
        )
    finally:
        await channel.close()
        await running.stop(0)
