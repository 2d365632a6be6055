"""Worker settings: parsed once in ``main()`` from argv and the environment.

Nothing reads the environment at import time. A bad value raises
:class:`SettingsError` naming the setting, which ``main()`` prints as one line
before exiting non-zero.
"""

from __future__ import annotations

import argparse
import enum
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class LogLevel(enum.Enum):
    ERROR = "error"
    WARN = "warn"
    INFO = "info"
    DEBUG = "debug"


class SettingsError(ValueError):
    """A setting has a value the worker cannot use."""

    def __init__(self, name: str, value: object, expected: str, *, secret: bool = False) -> None:
        # The message reaches stderr and the supervisor's log: a secret's value is never in it.
        shown = name if secret else f"{name}={value!r}"
        super().__init__(f"invalid setting {shown}: {expected}")
        self.name = name


class RequiredSettingError(SettingsError):
    """A setting that other settings make necessary is not set."""

    def __init__(self, name: str, why: str) -> None:
        ValueError.__init__(self, f"{name} is required {why}")
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
class TlsSettings:
    """PEM contents for the gRPC port. With ``client_ca``, callers must present
    a certificate it signed (mutual TLS)."""

    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = field(default=None, repr=False)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


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
    # Least time between two progress events of one job (the first and the
    # last step always go out); 0 sends every step.
    progress_interval_ms: float = 250.0
    # Small embedding passes replayed from CUDA graphs (CUDA devices only).
    embedding_cuda_graphs: bool = True
    # Secret every WorkerService call must carry as `authorization: Bearer …`;
    # None accepts any caller, which parse_settings allows only on loopback.
    worker_token: str | None = field(default=None, repr=False)
    # None serves plaintext.
    tls: TlsSettings | None = None


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
        "--progress-interval-ms",
        "PROGRESS_INTERVAL_MS",
        "least time between a job's progress events; first and last step always sent (default 250; 0 every step)",
    ),
    (
        "--embedding-cuda-graphs",
        "EMBEDDING_CUDA_GRAPHS",
        "replay small embedding passes from CUDA graphs on CUDA devices (default true)",
    ),
    (
        "--device-memory-fraction",
        "DEVICE_MEMORY_FRACTION",
        "share of a device's memory models may occupy (default 0.9)",
    ),
    ("--metrics-port", "METRICS_PORT", "Prometheus endpoint port, 0 any free, -1 off (default 9101)"),
    (
        "--worker-token",
        "WORKER_TOKEN",
        "secret (at least 32 characters) every call must carry as `authorization: Bearer <token>`; "
        "required unless listening on loopback or with mutual TLS. Prefer the environment: "
        "command lines are visible to every user in ps",
    ),
    ("--tls-cert", "WORKER_TLS_CERT", "server certificate chain (PEM file); with WORKER_TLS_KEY enables TLS"),
    ("--tls-key", "WORKER_TLS_KEY", "server private key (PEM file); with WORKER_TLS_CERT enables TLS"),
    (
        "--tls-client-ca",
        "WORKER_TLS_CLIENT_CA",
        "CA (PEM file) that must have signed every caller's certificate: mutual TLS",
    ),
)

MIN_TOKEN_CHARS = 32


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


def _token(raw: str) -> str | None:
    if raw == "":
        return None
    if len(raw) < MIN_TOKEN_CHARS:
        raise SettingsError("WORKER_TOKEN", raw, f"must be at least {MIN_TOKEN_CHARS} characters", secret=True)
    # gRPC metadata values are printable ASCII; a space or newline is a copy-paste accident.
    if not all("!" <= char <= "~" for char in raw):
        raise SettingsError("WORKER_TOKEN", raw, "must be printable ASCII without spaces", secret=True)
    return raw


def _pem(name: str, path: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise SettingsError(name, path, f"cannot be read ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data:
        raise SettingsError(name, path, "must be a PEM file")
    return data


def _tls(cert: str, key: str, client_ca: str) -> TlsSettings | None:
    if cert == "" and key == "":
        if client_ca != "":
            raise SettingsError("WORKER_TLS_CLIENT_CA", client_ca, "needs WORKER_TLS_CERT and WORKER_TLS_KEY")
        return None
    if cert == "" or key == "":
        missing = "WORKER_TLS_CERT" if cert == "" else "WORKER_TLS_KEY"
        raise SettingsError(missing, "", "WORKER_TLS_CERT and WORKER_TLS_KEY must be set together")
    return TlsSettings(
        certificate_chain=_pem("WORKER_TLS_CERT", cert),
        private_key=_pem("WORKER_TLS_KEY", key),
        client_ca=_pem("WORKER_TLS_CLIENT_CA", client_ca) if client_ca else None,
    )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: only this machine can connect."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _require_caller_authentication(host: str, token: str | None, tls: TlsSettings | None) -> None:
    # Anyone who can reach the port could run jobs and read outputs: off
    # loopback, callers must prove who they are with a token or a certificate.
    if token is None and not (tls and tls.mutual) and not is_loopback(host):
        raise RequiredSettingError(
            "WORKER_TOKEN", f"when listening on {host} (or set WORKER_TLS_CLIENT_CA for mutual TLS)"
        )


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

    host = raw("WORKER_HOST", "127.0.0.1")
    token = _token(raw("WORKER_TOKEN", ""))
    tls = _tls(raw("WORKER_TLS_CERT", ""), raw("WORKER_TLS_KEY", ""), raw("WORKER_TLS_CLIENT_CA", ""))
    _require_caller_authentication(host, token, tls)

    return Settings(
        worker_id=worker_id,
        host=host,
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
        progress_interval_ms=_float("PROGRESS_INTERVAL_MS", raw("PROGRESS_INTERVAL_MS", "250"), 0, 60_000),
        embedding_cuda_graphs=_bool("EMBEDDING_CUDA_GRAPHS", raw("EMBEDDING_CUDA_GRAPHS", "true")),
        device_memory_fraction=_float("DEVICE_MEMORY_FRACTION", raw("DEVICE_MEMORY_FRACTION", "0.9"), 0, 1),
        metrics_port=_int("METRICS_PORT", raw("METRICS_PORT", "9101"), -1, 65535),
        worker_token=token,
        tls=tls,
    )
