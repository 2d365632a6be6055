"""The worker as the gateway runs it: a process that announces its port on a
file descriptor once SERVING, and drains and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from device_ops.v1 import devices_pb2, worker_service_pb2_grpc

SRC = Path(__file__).resolve().parents[1] / "src"


def test_process_announces_port_serves_and_stops_cleanly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "device_ops_worker", "--port", "0", "--worker-id", "proc",
            "--ready-fd", str(write_end), "--metrics-port", "0",
            "--model-directory", str(tmp_path / "models"), "--output-directory", str(tmp_path / "out"),
            "--cache-directory", str(tmp_path / "cache"),
        ],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        pass_fds=(write_end,),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as ready:
            announcement = json.loads(ready.readline())
        port = announcement["port"]
        assert port > 0
        assert announcement["metricsPort"] > 0
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            devices = worker_service_pb2_grpc.WorkerServiceStub(channel).ListDevices(
                devices_pb2.ListDevicesRequest(), timeout=10
            )
            assert devices.devices[-1].id == "proc:cpu"
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        messages = [json.loads(line)["message"] for line in stdout.splitlines() if line.startswith("{")]
        assert "worker serving" in messages
        assert messages[-1] == "worker stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
