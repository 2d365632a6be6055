"""Workers accept calls only from their gateway: a bearer token in metadata,
TLS and mutual TLS, and the refusal to listen off loopback unprotected —
tested through real grpc.aio servers on port 0 and a real process."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from device_ops.v1 import devices_pb2, inference_pb2, worker_service_pb2_grpc
from device_ops_worker.auth_interceptor import UNAUTHENTICATED_MESSAGE
from device_ops_worker.server import RunningServer, start_server
from device_ops_worker.settings import (
    RequiredSettingError,
    Settings,
    SettingsError,
    TlsSettings,
    parse_settings,
)

from .certificates import Certificates, make_certificates
from .conftest import make_settings

SRC = Path(__file__).resolve().parents[1] / "src"
TOKEN = secrets.token_urlsafe(32)
WRONG_TOKEN = secrets.token_urlsafe(32)


Serve = Callable[..., Awaitable[RunningServer]]


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _list_devices(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    response = await stub.ListDevices(devices_pb2.ListDevicesRequest(), timeout=10, metadata=metadata)
    return response.devices[-1].id


async def _refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Start servers with given settings overrides; all stopped at the end."""
    started: list[RunningServer] = []

    async def start(**overrides: object) -> RunningServer:
        running = await start_server(make_settings(tmp_path, **overrides))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop(0)


@pytest.fixture
async def guarded(serve: Serve) -> AsyncIterator[grpc.aio.Channel]:
    running = await serve(worker_token=TOKEN)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


def _tls(certificates: Certificates, *, mutual: bool) -> TlsSettings:
    return TlsSettings(
        certificate_chain=certificates.server_cert.read_bytes(),
        private_key=certificates.server_key.read_bytes(),
        client_ca=certificates.ca.read_bytes() if mutual else None,
    )


def _tls_files(certificates: Certificates, *, mutual: bool) -> dict[str, object]:
    """The same TLS settings as files, the way an operator gives them."""
    return {
        "tls_cert": certificates.server_cert,
        "tls_key": certificates.server_key,
        "tls_client_ca": certificates.ca if mutual else None,
    }


def _tls_channel(port: int, certificates: Certificates, cert: Path | None = None, key: Path | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certificates.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


# --- Token ---------------------------------------------------------------


async def test_without_a_token_a_loopback_worker_serves_anyone(serve: Serve) -> None:
    running = await serve()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        assert await _list_devices(channel) == "test-worker:cpu"


async def test_a_call_without_the_token_is_unauthenticated(guarded: grpc.aio.Channel) -> None:
    error = await _refusal(_list_devices(guarded))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == UNAUTHENTICATED_MESSAGE


async def test_a_stream_without_the_token_is_unauthenticated(guarded: grpc.aio.Channel) -> None:
    stub = worker_service_pb2_grpc.WorkerServiceStub(guarded)

    async def read_all() -> None:
        async for _ in stub.Infer(inference_pb2.InferRequest(job_id="j1", model="m"), timeout=10):
            pass

    error = await _refusal(read_all())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "metadata",
    [
        _bearer(WRONG_TOKEN),
        (("authorization", TOKEN),),  # the right secret without the scheme
        (("authorization", f"Bearer {TOKEN}x"),),
        _bearer(TOKEN) + _bearer(WRONG_TOKEN),  # two credentials are never one valid one
    ],
    ids=["wrong-token", "no-scheme", "longer", "two-credentials"],
)
async def test_a_wrong_token_is_unauthenticated_and_not_echoed(
    guarded: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    error = await _refusal(_list_devices(guarded, metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == UNAUTHENTICATED_MESSAGE
    assert [r for r in caplog.records if r.getMessage() == "call refused: not authenticated"]
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert WRONG_TOKEN not in logged
    assert TOKEN not in logged


async def test_the_right_token_is_served(guarded: grpc.aio.Channel) -> None:
    assert await _list_devices(guarded, _bearer(TOKEN)) == "test-worker:cpu"


async def test_health_answers_a_probe_without_credentials_but_not_a_wrong_one(guarded: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(guarded)
    probe = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert probe.status == health_pb2.HealthCheckResponse.SERVING
    gateway = await health.Check(health_pb2.HealthCheckRequest(), timeout=5, metadata=_bearer(TOKEN))
    assert gateway.status == health_pb2.HealthCheckResponse.SERVING
    # A gateway holding the wrong token must not see a healthy worker that refuses all work.
    error = await _refusal(health.Check(health_pb2.HealthCheckRequest(), timeout=5, metadata=_bearer(WRONG_TOKEN)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_unknown_method_without_the_token_reveals_nothing(guarded: grpc.aio.Channel) -> None:
    call = guarded.unary_unary("/device_ops.v1.WorkerService/NoSuchMethod")
    error = await _refusal(call(b"", timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# --- Settings ------------------------------------------------------------


def test_the_token_is_read_from_the_environment_and_never_shown() -> None:
    settings = parse_settings(["--host", "0.0.0.0"], {"WORKER_TOKEN": TOKEN})
    assert settings.worker_token == TOKEN
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize("token", ["short-token", "x" * 31, "with spaces " + "x" * 32, "ü" * 40])
def test_a_bad_token_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings([], {"WORKER_TOKEN": token})
    assert caught.value.name == "WORKER_TOKEN"
    assert token not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"WORKER_TLS_CERT": "server.pem"}, "WORKER_TLS_KEY"),
        ({"WORKER_TLS_KEY": "server.key"}, "WORKER_TLS_CERT"),
        ({"WORKER_TLS_CLIENT_CA": "ca.pem"}, "WORKER_TLS_CLIENT_CA"),
    ],
)
def test_tls_settings_go_together(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings([], env)
    assert caught.value.name == name


def test_an_unreadable_or_non_pem_file_is_named(tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_text("not a key")
    with pytest.raises(SettingsError) as missing:
        parse_settings([], {"WORKER_TLS_CERT": str(tmp_path / "absent.pem"), "WORKER_TLS_KEY": str(key)})
    assert missing.value.name == "WORKER_TLS_CERT"
    (tmp_path / "server.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(SettingsError) as garbage:
        parse_settings([], {"WORKER_TLS_CERT": str(tmp_path / "server.pem"), "WORKER_TLS_KEY": str(key)})
    assert garbage.value.name == "WORKER_TLS_KEY"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "worker.internal"])
def test_off_loopback_without_a_token_or_mutual_tls_is_refused(host: str) -> None:
    with pytest.raises(RequiredSettingError) as caught:
        parse_settings(["--host", host], {})
    assert str(caught.value) == (
        f"WORKER_TOKEN is required when listening on {host} (or set WORKER_TLS_CLIENT_CA for mutual TLS)"
    )


def test_off_loopback_server_tls_alone_is_not_enough(certificates: Certificates) -> None:
    env = {"WORKER_TLS_CERT": str(certificates.server_cert), "WORKER_TLS_KEY": str(certificates.server_key)}
    with pytest.raises(RequiredSettingError):
        parse_settings(["--host", "0.0.0.0"], env)


def test_off_loopback_mutual_tls_without_a_token_is_allowed(certificates: Certificates) -> None:
    env = {
        "WORKER_TLS_CERT": str(certificates.server_cert),
        "WORKER_TLS_KEY": str(certificates.server_key),
        "WORKER_TLS_CLIENT_CA": str(certificates.ca),
    }
    settings = parse_settings(["--host", "0.0.0.0"], env)
    assert settings.worker_token is None
    assert settings.tls is not None and settings.tls.mutual


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost"])
def test_loopback_without_a_token_is_allowed(host: str) -> None:
    assert parse_settings(["--host", host], {}).worker_token is None


def test_the_process_refuses_to_listen_on_all_interfaces_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    result = subprocess.run(
        [sys.executable, "-m", "device_ops_worker", "--host", "0.0.0.0", "--port", "0"],
        env={**env, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "device_ops_worker: WORKER_TOKEN is required when listening on 0.0.0.0 "
        "(or set WORKER_TLS_CLIENT_CA for mutual TLS)"
    ]


# --- TLS -----------------------------------------------------------------


async def test_a_tls_worker_serves_a_client_that_trusts_its_ca(serve: Serve, certificates: Certificates) -> None:
    running = await serve(**_tls_files(certificates, mutual=False))
    async with _tls_channel(running.port, certificates) as channel:
        assert await _list_devices(channel) == "test-worker:cpu"


async def test_a_tls_worker_refuses_a_plaintext_client(serve: Serve, certificates: Certificates) -> None:
    running = await serve(**_tls_files(certificates, mutual=False))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        error = await _refusal(_list_devices(channel))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate(serve: Serve, certificates: Certificates) -> None:
    running = await serve(**_tls_files(certificates, mutual=True))
    async with _tls_channel(running.port, certificates) as channel:
        error = await _refusal(_list_devices(channel))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_certificate_from_another_ca(serve: Serve, certificates: Certificates) -> None:
    running = await serve(**_tls_files(certificates, mutual=True))
    async with _tls_channel(running.port, certificates, certificates.stranger_cert, certificates.stranger_key) as channel:
        error = await _refusal(_list_devices(channel))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_serves_a_client_with_its_certificate(serve: Serve, certificates: Certificates) -> None:
    running = await serve(**_tls_files(certificates, mutual=True))
    async with _tls_channel(running.port, certificates, certificates.client_cert, certificates.client_key) as channel:
        assert await _list_devices(channel) == "test-worker:cpu"


async def test_token_and_mutual_tls_together(serve: Serve, certificates: Certificates) -> None:
    running = await serve(**_tls_files(certificates, mutual=True), worker_token=TOKEN)
    async with _tls_channel(running.port, certificates, certificates.client_cert, certificates.client_key) as channel:
        error = await _refusal(_list_devices(channel))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await _list_devices(channel, _bearer(TOKEN)) == "test-worker:cpu"


def test_settings_from_files_match_what_the_server_uses(certificates: Certificates) -> None:
    env = {
        "WORKER_TLS_CERT": str(certificates.server_cert),
        "WORKER_TLS_KEY": str(certificates.server_key),
        "WORKER_TLS_CLIENT_CA": str(certificates.ca),
    }
    settings: Settings = parse_settings([], env)
    assert settings.tls == _tls(certificates, mutual=True)
    assert b"PRIVATE KEY" not in repr(settings).encode()


async def test_a_key_that_does_not_match_the_certificate_fails_to_bind(serve: Serve, certificates: Certificates) -> None:
    mismatched = {"tls_cert": certificates.server_cert, "tls_key": certificates.client_key}
    with pytest.raises(OSError, match="WORKER_TLS_KEY matches WORKER_TLS_CERT"):
        await serve(**mismatched)
