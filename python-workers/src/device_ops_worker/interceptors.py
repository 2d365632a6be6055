"""Server interceptor: the one place domain errors become gRPC statuses.

It also binds the caller's correlation id (``x-request-id`` metadata) to the
call, so every log line written while serving it carries the id.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .errors import INTERNAL_MESSAGE, WorkerError
from .logging_setup import correlation_id

log = logging.getLogger(__name__)

CORRELATION_METADATA_KEY = "x-request-id"
# Accept only ids that are safe to log verbatim.
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _correlation(details: grpc.HandlerCallDetails) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key == CORRELATION_METADATA_KEY and isinstance(value, str) and _CORRELATION_ID.match(value):
            return value
    return None


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
    if isinstance(exc, NotImplementedError):
        # The generated base class raises this for rpcs not built yet.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this worker yet")
    if isinstance(exc, WorkerError):
        log.info("call failed", extra={"method": method, "status": exc.status.value, "reason": exc.message})
        await context.abort(grpc.StatusCode[exc.status.value], exc.message)
    log.error("call failed with an unexpected error", extra={"method": method}, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def _log_call(method: str, started: float) -> None:
    log.debug("call", extra={"method": method, "durationMs": round((time.perf_counter() - started) * 1000, 3)})


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cid = _correlation(handler_call_details)

        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                correlation_id.set(cid)
                started = time.perf_counter()
                try:
                    return await inner_unary(request, context)
                except Exception as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await _abort(context, method, exc)
                finally:
                    _log_call(method, started)

            return handler._replace(unary_unary=unary)

        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                correlation_id.set(cid)
                started = time.perf_counter()
                try:
                    async for response in inner_stream(request, context):
                        yield response
                except Exception as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await _abort(context, method, exc)
                finally:
                    _log_call(method, started)

            return handler._replace(unary_stream=stream)

        return handler
