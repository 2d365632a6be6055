"""Fixtures: a real grpc.aio worker server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from device_ops.v1 import worker_service_pb2_grpc
from device_ops_worker.server import RunningServer, start_server
from device_ops_worker.settings import LogLevel, Settings

WORKER_ID = "test-worker"


def make_settings(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "worker_id": WORKER_ID,
        "host": "127.0.0.1",
        "port": 0,
        "ready_fd": None,
        "log_level": LogLevel.INFO,
        "shutdown_grace_seconds": 1.0,
        "parent_pid": None,
        "model_directory": tmp / "models",
        "output_directory": tmp / "outputs",
        "cache_directory": tmp / "cache",
        "allow_pickle_models": False,
        "max_loaded_models": 4,
        "max_queue_per_device": 64,
        "max_batch_size": 64,
        "max_batch_delay_ms": 2.0,
        "device_memory_fraction": 0.9,
        "metrics_port": -1,
        # Every step's progress event: what the tests of the event stream assert.
        "progress_interval_ms": 0.0,
        # Loopback without a token or TLS: what the tests of everything else need.
        "worker_token": None,
        "tls": None,
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
async def worker(tmp_path: Path) -> AsyncIterator[Worker]:
    running = await start_server(make_settings(tmp_path))
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
