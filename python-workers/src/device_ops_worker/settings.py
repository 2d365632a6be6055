"""Worker settings: parsed once in ``main()`` from argv and the environment.

Nothing reads the environment at import time. A bad value raises
:class:`SettingsError` naming the setting, which ``main()`` prints as one line
before exiting non-zero.
"""

from __future__ import annotations

import argparse
import enum
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class LogLevel(enum.Enum):
    ERROR = "error"
    WARN = "warn"
    INFO = "info"
    DEBUG = "debug"


class SettingsError(ValueError):
    """A setting has a value the worker cannot use."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        super().__init__(f"invalid setting {name}={value!r}: {expected}")
        self.name = name


@dataclass(frozen=True)
class Settings:
    worker_id: str
    host: str
    port: int
    ready_fd: int | None
    log_level: LogLevel
    shutdown_grace_seconds: float
    parent_pid: int | None


# (flag, environment variable, help). Flags win over the environment.
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--worker-id", "WORKER_ID", "name reported in GetWorkerInfo and logs (default: host name)"),
    ("--host", "WORKER_HOST", "address to listen on (default 127.0.0.1)"),
    ("--port", "WORKER_PORT", "TCP port, 0 for any free port (default 50051)"),
    ("--ready-fd", "WORKER_READY_FD", "file descriptor to write {\"port\": N} to once serving"),
    ("--log-level", "LOG_LEVEL", "error, warn, info or debug (default info)"),
    (
        "--parent-pid",
        "WORKER_PARENT_PID",
        "exit when this process is no longer the parent (a supervisor that died)",
    ),
    (
        "--shutdown-grace-seconds",
        "SHUTDOWN_GRACE_SECONDS",
        "seconds in-flight calls get to finish on SIGTERM (default 10)",
    ),
)


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, raw, f"must be an integer between {low} and {high}") from None
    if not low <= value <= high:
        raise SettingsError(name, raw, f"must be an integer between {low} and {high}")
    return value


def _float(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, raw, f"must be a number between {low:g} and {high:g}") from None
    if not low <= value <= high:
        raise SettingsError(name, raw, f"must be a number between {low:g} and {high:g}")
    return value


def _enum(name: str, raw: str, kind: type[LogLevel]) -> LogLevel:
    try:
        return kind(raw.strip().lower())
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise SettingsError(name, raw, f"must be one of {choices}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device_ops_worker",
        description="device-operations Python worker (gRPC)",
        exit_on_error=False,
    )
    for flag, env, doc in _OPTIONS:
        parser.add_argument(flag, dest=env, help=f"{doc} [env {env}]")
    return parser


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Build settings from command-line flags, then the environment, then defaults."""
    try:
        args = vars(_parser().parse_args(list(argv)))
    except argparse.ArgumentError as exc:
        raise SettingsError(exc.argument_name or "argument", "", str(exc)) from None

    def raw(name: str, default: str | None) -> str | None:
        value = args.get(name)
        if value is None:
            value = env.get(name)
        return default if value in (None, "") else value

    worker_id = raw("WORKER_ID", socket.gethostname()) or "worker"
    if len(worker_id) > 128 or not worker_id.isprintable():
        raise SettingsError("WORKER_ID", worker_id, "must be printable and at most 128 characters")

    ready = raw("WORKER_READY_FD", None)
    parent = raw("WORKER_PARENT_PID", None)
    return Settings(
        worker_id=worker_id,
        host=raw("WORKER_HOST", "127.0.0.1") or "127.0.0.1",
        port=_int("WORKER_PORT", raw("WORKER_PORT", "50051") or "", 0, 65535),
        ready_fd=None if ready is None else _int("WORKER_READY_FD", ready, 3, 1 << 20),
        log_level=_enum("LOG_LEVEL", raw("LOG_LEVEL", "info") or "", LogLevel),
        shutdown_grace_seconds=_float(
            "SHUTDOWN_GRACE_SECONDS", raw("SHUTDOWN_GRACE_SECONDS", "10") or "", 0, 3600
        ),
        parent_pid=None if parent is None else _int("WORKER_PARENT_PID", parent, 1, 1 << 22),
    )
