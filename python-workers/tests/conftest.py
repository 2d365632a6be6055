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
from device_ops_worker.settings import SETTINGS, Settings, parse_settings

WORKER_ID = "test-worker"


def make_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings as parse_settings builds them from an environment holding the
    tests' own values and then `overrides`, by setting key (Settings field
    names; tls_cert, tls_key and tls_client_ca for the TLS files). Everything
    else keeps the worker's defaults: loopback, no token, no TLS."""
    values: dict[str, object] = {
        "worker_id": WORKER_ID,
        "port": 0,
        "shutdown_grace_seconds": 1.0,
        "model_directory": tmp / "models",
        "output_directory": tmp / "outputs",
        "cache_directory": tmp / "cache",
        "metrics_port": -1,
        # Every step's progress event: what the tests of the event stream assert.
        "progress_interval_ms": 0,
        **overrides,
    }
    by_key = {setting.key: setting for setting in SETTINGS}
    return parse_settings([], {by_key[key].env: _as_text(value) for key, value in values.items()})


def _as_text(value: object) -> str:
    """A value as the environment would spell it; None is unset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
