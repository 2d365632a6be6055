"""The one error interceptor, tested through a real grpc.aio server: each
domain error becomes its status with its message; anything else becomes
INTERNAL with a generic message; the correlation id reaches the log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from device_ops_worker import errors
from device_ops_worker.interceptors import INTERNAL_MESSAGE, ErrorMappingInterceptor
from device_ops_worker.logging_setup import JsonFormatter

SERVICE = "test.Errors"
DOMAIN_ERRORS: dict[str, type[errors.WorkerError]] = {
    "INVALID_ARGUMENT": errors.InvalidArgumentError,
    "NOT_FOUND": errors.NotFoundError,
    "ALREADY_EXISTS": errors.AlreadyExistsError,
    "FAILED_PRECONDITION": errors.FailedPreconditionError,
    "RESOURCE_EXHAUSTED": errors.ResourceExhaustedError,
    "CANCELLED": errors.CancelledError,
    "DEADLINE_EXCEEDED": errors.DeadlineExceededError,
    "UNAVAILABLE": errors.UnavailableError,
}
log = logging.getLogger("test.errors")


def _identity(data: bytes) -> bytes:
    return data


async def _raise(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    name = request.decode()
    log.info("handling", extra={"requested": name})
    if name in DOMAIN_ERRORS:
        raise DOMAIN_ERRORS[name](f"{name.lower()} because field 'x' is wrong")
    if name == "OK":
        return b"ok"
    raise RuntimeError("secret internal detail /etc/passwd")


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    raise errors.ResourceExhaustedError("queue full: 8 of 8 slots in use")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    handlers = {
        "Raise": grpc.unary_unary_rpc_method_handler(_raise, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream, _identity, _identity),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    await channel.close()
    await server.stop(0)


@pytest.mark.parametrize("status", sorted(DOMAIN_ERRORS))
async def test_domain_error_maps_to_its_status(channel: grpc.aio.Channel, status: str) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Raise")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(status.encode(), timeout=5)
    assert caught.value.code() == grpc.StatusCode[status]
    assert caught.value.details() == f"{status.lower()} because field 'x' is wrong"


async def test_unexpected_error_is_internal_and_generic(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Raise")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"BOOM", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == INTERNAL_MESSAGE
    assert "passwd" not in (caught.value.details() or "")


async def test_error_in_a_stream_ends_it_with_the_status(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in call:
            received.append(message)
    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "8 of 8" in (caught.value.details() or "")


async def test_success_passes_through(channel: grpc.aio.Channel) -> None:
    assert await channel.unary_unary(f"/{SERVICE}/Raise")(b"OK", timeout=5) == b"ok"


async def test_correlation_id_from_metadata_is_on_log_lines(channel: grpc.aio.Channel) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("w-test"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        await channel.unary_unary(f"/{SERVICE}/Raise")(b"OK", timeout=5, metadata=(("x-request-id", "req-123"),))
        await channel.unary_unary(f"/{SERVICE}/Raise")(b"OK", timeout=5, metadata=(("x-request-id", "bad id with spaces"),))
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines[0]["correlationId"] == "req-123"
    assert lines[0]["workerId"] == "w-test"
    assert lines[0]["requested"] == "OK"
    # An id that is not safe to log verbatim is dropped, not logged.
    assert "correlationId" not in lines[1]
