"""Worker settings: parsed once in ``main()`` from argv and the environment.

Nothing reads the environment at import time. A bad value raises
:class:`SettingsError` naming the setting, which ``main()`` prints as one line
before exiting non-zero.
"""

from __future__ import annotations

import argparse
import enum
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


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
class Limits:
    """What one request may ask for; beyond these it is refused with INVALID_ARGUMENT."""

    max_image_side: int = 2048
    max_steps: int = 150
    max_images_per_prompt: int = 4
    max_embedding_texts: int = 2048
    max_text_chars: int = 20_000
    max_input_pixels: int = 4096 * 4096


@dataclass(frozen=True)
class Settings:
    worker_id: str
    host: str
    port: int
    ready_fd: int | None
    log_level: LogLevel
    shutdown_grace_seconds: float
    parent_pid: int | None
    model_directory: Path
    output_directory: Path
    cache_directory: Path
    allow_pickle_models: bool
    max_loaded_models: int
    max_queue_per_device: int
    max_batch_size: int
    max_batch_delay_ms: float
    device_memory_fraction: float
    # -1 disables the metrics endpoint; 0 picks a free port.
    metrics_port: int
    limits: Limits = Limits()


# (flag, environment variable, help). Flags win over the environment.
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--worker-id", "WORKER_ID", "name reported in GetWorkerInfo and logs (default: host name)"),
    ("--host", "WORKER_HOST", "address to listen on (default 127.0.0.1)"),
    ("--port", "WORKER_PORT", "TCP port, 0 for any free port (default 50051)"),
    ("--ready-fd", "WORKER_READY_FD", 'file descriptor to write {"port": N, "metricsPort": M} to once serving'),
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
    ("--model-directory", "MODEL_DIRECTORY", "model repository, one folder or file per model (default ./models)"),
    ("--output-directory", "OUTPUT_DIRECTORY", "where generated files are written (default ./outputs)"),
    ("--cache-directory", "CACHE_DIRECTORY", "library caches (Hugging Face) (default ./cache)"),
    ("--allow-pickle-models", "ALLOW_PICKLE_MODELS", "true to accept pickle-based weights (default false)"),
    ("--max-loaded-models", "MAX_LOADED_MODELS", "models resident at once before idle ones are evicted (default 4)"),
    ("--max-queue-per-device", "MAX_QUEUE_PER_DEVICE", "jobs waiting per device before RESOURCE_EXHAUSTED (default 64)"),
    ("--max-batch-size", "MAX_BATCH_SIZE", "rows merged into one dynamic batch (default 64; 1 disables batching)"),
    ("--max-batch-delay-ms", "MAX_BATCH_DELAY_MS", "how long an idle device waits to fill a batch (default 2)"),
    (
        "--device-memory-fraction",
        "DEVICE_MEMORY_FRACTION",
        "share of a device's memory models may occupy (default 0.9)",
    ),
    ("--metrics-port", "METRICS_PORT", "Prometheus endpoint port, 0 any free, -1 off (default 9101)"),
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


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise SettingsError(name, raw, "must be true or false")


def _enum(name: str, raw: str, kind: type[LogLevel]) -> LogLevel:
    try:
        return kind(raw.strip().lower())
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise SettingsError(name, raw, f"must be one of {choices}") from None


def _directory(name: str, raw: str) -> Path:
    if "\0" in raw:
        raise SettingsError(name, raw, "must be a path")
    return Path(raw).expanduser().resolve()


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

    def raw(name: str, default: str) -> str:
        value = args.get(name)
        if value is None:
            value = env.get(name)
        return default if value in (None, "") else str(value)

    def optional(name: str, parse: Callable[[str, str], int]) -> int | None:
        value = raw(name, "")
        return None if value == "" else parse(name, value)

    worker_id = raw("WORKER_ID", socket.gethostname()) or "worker"
    if len(worker_id) > 128 or not worker_id.isprintable():
        raise SettingsError("WORKER_ID", worker_id, "must be printable and at most 128 characters")

    return Settings(
        worker_id=worker_id,
        host=raw("WORKER_HOST", "127.0.0.1"),
        port=_int("WORKER_PORT", raw("WORKER_PORT", "50051"), 0, 65535),
        ready_fd=optional("WORKER_READY_FD", lambda n, v: _int(n, v, 3, 1 << 20)),
        log_level=_enum("LOG_LEVEL", raw("LOG_LEVEL", "info"), LogLevel),
        shutdown_grace_seconds=_float("SHUTDOWN_GRACE_SECONDS", raw("SHUTDOWN_GRACE_SECONDS", "10"), 0, 3600),
        parent_pid=optional("WORKER_PARENT_PID", lambda n, v: _int(n, v, 1, 1 << 22)),
        model_directory=_directory("MODEL_DIRECTORY", raw("MODEL_DIRECTORY", os.path.join(".", "models"))),
        output_directory=_directory("OUTPUT_DIRECTORY", raw("OUTPUT_DIRECTORY", os.path.join(".", "outputs"))),
        cache_directory=_directory("CACHE_DIRECTORY", raw("CACHE_DIRECTORY", os.path.join(".", "cache"))),
        allow_pickle_models=_bool("ALLOW_PICKLE_MODELS", raw("ALLOW_PICKLE_MODELS", "false")),
        max_loaded_models=_int("MAX_LOADED_MODELS", raw("MAX_LOADED_MODELS", "4"), 1, 1024),
        max_queue_per_device=_int("MAX_QUEUE_PER_DEVICE", raw("MAX_QUEUE_PER_DEVICE", "64"), 1, 100_000),
        max_batch_size=_int("MAX_BATCH_SIZE", raw("MAX_BATCH_SIZE", "64"), 1, 8192),
        max_batch_delay_ms=_float("MAX_BATCH_DELAY_MS", raw("MAX_BATCH_DELAY_MS", "2"), 0, 10_000),
        device_memory_fraction=_float("DEVICE_MEMORY_FRACTION", raw("DEVICE_MEMORY_FRACTION", "0.9"), 0, 1),
        metrics_port=_int("METRICS_PORT", raw("METRICS_PORT", "9101"), -1, 65535),
    )
