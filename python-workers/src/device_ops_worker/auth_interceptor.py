"""Server interceptor: only callers holding the worker token are served.

Every call must carry ``authorization: Bearer <token>`` metadata, compared in
constant time. The one exception is the standard health service called
*without* a credential: orchestrators probe it, and it reveals nothing. A
health call that presents a wrong credential is refused like any other, so a
gateway holding the wrong token sees UNAUTHENTICATED in its health checks
instead of a worker that looks healthy and refuses all work.

A refused call never reaches the servicer, and its request is not even
decoded. The status message is the same whatever was sent and never echoes it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)

AUTHORIZATION_METADATA_KEY = "authorization"
UNAUTHENTICATED_MESSAGE = "missing or invalid worker token"
# Services a caller without any credential may use.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def _presented(details: grpc.HandlerCallDetails) -> bytes | None:
    """The credential sent, None when none was; several count as a wrong one."""
    values = [value for key, value in details.invocation_metadata or () if key == AUTHORIZATION_METADATA_KEY]
    if not values:
        return None
    if len(values) != 1 or not isinstance(values[0], str):
        return b""
    return values[0].encode("utf-8", "surrogateescape")


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


async def _refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
    yield None  # never reached; makes this a response stream like the rpc it replaces


def _refusal(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    # Same shape as the rpc, so streaming clients read a clean status; no
    # deserializer, so an unauthenticated payload is never parsed.
    request_streaming = bool(handler and handler.request_streaming)
    response_streaming = bool(handler and handler.response_streaming)
    if request_streaming and response_streaming:
        return grpc.stream_stream_rpc_method_handler(_refuse_stream)
    if request_streaming:
        return grpc.stream_unary_rpc_method_handler(_refuse)
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(_refuse_stream)
    return grpc.unary_unary_rpc_method_handler(_refuse)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Place first, before the error interceptor: refused calls go no further."""

    def __init__(self, token: str, open_method_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES) -> None:
        self._expected = f"Bearer {token}".encode()
        self._open = open_method_prefixes

    def allows(self, method: str, presented: bytes | None) -> bool:
        if presented is None:
            return method.startswith(self._open)
        return hmac.compare_digest(presented, self._expected)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        presented = _presented(handler_call_details)
        handler = await continuation(handler_call_details)
        if self.allows(handler_call_details.method, presented):
            return handler
        log.warning(
            "call refused: not authenticated",
            extra={"method": handler_call_details.method, "credential": "missing" if presented is None else "wrong"},
        )
        # Unknown methods are refused too, so a caller without the token learns nothing.
        return _refusal(handler)
