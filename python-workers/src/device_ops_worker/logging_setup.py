"""Structured JSON logs on stdout, one object per line.

The gateway reads a local worker's stdout and re-emits each line in its own
log stream, so these field names follow the gateway's (``level``,
``message``, ``correlationId``, ``workerId``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from .settings import LogLevel

# Correlation id of the call being served, set by the servicer interceptor
# from the gateway's ``x-request-id`` metadata.
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

_LEVELS = {
    LogLevel.ERROR: logging.ERROR,
    LogLevel.WARN: logging.WARNING,
    LogLevel.INFO: logging.INFO,
    LogLevel.DEBUG: logging.DEBUG,
}
_NAMES = {logging.ERROR: "error", logging.WARNING: "warn", logging.INFO: "info", logging.DEBUG: "debug"}
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self._worker_id = worker_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": _NAMES.get(record.levelno, "error" if record.levelno > logging.ERROR else "debug"),
            "message": record.getMessage(),
            "logger": record.name,
            "workerId": self._worker_id,
        }
        cid = correlation_id.get()
        if cid:
            entry["correlationId"] = cid
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: LogLevel, worker_id: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(worker_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
