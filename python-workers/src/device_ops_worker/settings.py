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
    # Pre-tokenized embedding inputs: ids per entry (the model's own maximum
    # length, checked once it is loaded, is usually lower).
    max_tokens_per_text: int = 8192
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
    """Every field but `limits` comes from SETTINGS below, which holds each
    one's default; `tls` combines the three WORKER_TLS_* files."""

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
    # Least time between two progress events of one job (the first and the
    # last step always go out); 0 sends every step.
    progress_interval_ms: float
    # What AttachJob can replay (engine/job_journal.py): a finished job's
    # events for this long, of this many finished jobs at most, each with its
    # most recent progress events up to the last number (all other events kept).
    job_retention_seconds: float
    max_retained_jobs: int
    max_retained_progress_events: int
    # Small embedding passes replayed from CUDA graphs (CUDA devices only).
    embedding_cuda_graphs: bool
    device_memory_fraction: float
    # -1 disables the metrics endpoint; 0 picks a free port.
    metrics_port: int
    # Secret every WorkerService call must carry as `authorization: Bearer …`;
    # None accepts any caller, which parse_settings allows only on loopback.
    worker_token: str | None = field(repr=False)
    # None serves plaintext.
    tls: TlsSettings | None
    limits: Limits = Limits()


MIN_TOKEN_CHARS = 32

Parser = Callable[[str, str], object]


def _ranged(convert: Callable[[str], float], low: float, high: float, expected: str) -> Parser:
    def parse(name: str, raw: str) -> float:
        try:
            value = convert(raw)
        except ValueError:
            raise SettingsError(name, raw, expected) from None
        if not low <= value <= high:
            raise SettingsError(name, raw, expected)
        return value

    return parse


def _int(low: int, high: int) -> Parser:
    return _ranged(int, low, high, f"must be an integer between {low} and {high}")


def _float(low: float, high: float) -> Parser:
    return _ranged(float, low, high, f"must be a number between {low:g} and {high:g}")


def _optional(parse: Parser) -> Parser:
    """Unset (empty) stays None; anything else must parse."""
    return lambda name, raw: None if raw == "" else parse(name, raw)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise SettingsError(name, raw, "must be true or false")


def _log_level(name: str, raw: str) -> LogLevel:
    try:
        return LogLevel(raw.strip().lower())
    except ValueError:
        choices = ", ".join(member.value for member in LogLevel)
        raise SettingsError(name, raw, f"must be one of {choices}") from None


def _text(name: str, raw: str) -> str:
    return raw


def _worker_id(name: str, raw: str) -> str:
    worker_id = raw or socket.gethostname() or "worker"
    if len(worker_id) > 128 or not worker_id.isprintable():
        raise SettingsError(name, worker_id, "must be printable and at most 128 characters")
    return worker_id


def _directory(name: str, raw: str) -> Path:
    if "\0" in raw:
        raise SettingsError(name, raw, "must be a path")
    return Path(raw).expanduser().resolve()


def _token(name: str, raw: str) -> str | None:
    if raw == "":
        return None
    if len(raw) < MIN_TOKEN_CHARS:
        raise SettingsError(name, raw, f"must be at least {MIN_TOKEN_CHARS} characters", secret=True)
    # gRPC metadata values are printable ASCII; a space or newline is a copy-paste accident.
    if not all("!" <= char <= "~" for char in raw):
        raise SettingsError(name, raw, "must be printable ASCII without spaces", secret=True)
    return raw


@dataclass(frozen=True)
class Setting:
    """One setting: its flag, its environment variable, what it does, its
    parser and its default as the environment would spell it ("" is unset).
    The flag names the Settings field it fills (--max-batch-size: max_batch_size)."""

    flag: str
    env: str
    doc: str
    parse: Parser
    default: str = ""

    @property
    def key(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def help(self) -> str:
        default = f" (default {self.default})" if self.default else ""
        return f"{self.doc}{default} [env {self.env}]"


# Flags win over the environment, the environment over defaults. The three
# TLS paths are read and checked together into Settings.tls. Each entry opens
# with its flag and variable: gateway/test/deploy/kubernetes.test.ts reads the
# variables from this file to check the worker's ConfigMap.
SETTINGS: tuple[Setting, ...] = (
    Setting("--worker-id", "WORKER_ID", "name reported in GetWorkerInfo and logs (default: host name)", _worker_id),
    Setting("--host", "WORKER_HOST", "address to listen on", _text, "127.0.0.1"),
    Setting("--port", "WORKER_PORT", "TCP port, 0 for any free port", _int(0, 65535), "50051"),
    Setting(
        "--ready-fd", "WORKER_READY_FD", 'file descriptor to write {"port": N, "metricsPort": M} to once serving',
        _optional(_int(3, 1 << 20)),
    ),
    Setting("--log-level", "LOG_LEVEL", "error, warn, info or debug", _log_level, "info"),
    Setting(
        "--parent-pid", "WORKER_PARENT_PID", "exit when this process is no longer the parent (a supervisor that died)",
        _optional(_int(1, 1 << 22)),
    ),
    Setting(
        "--shutdown-grace-seconds", "SHUTDOWN_GRACE_SECONDS", "seconds in-flight calls get to finish on SIGTERM",
        _float(0, 3600), "10",
    ),
    Setting(
        "--model-directory", "MODEL_DIRECTORY", "model repository, one folder or file per model",
        _directory, os.path.join(".", "models"),
    ),
    Setting(
        "--output-directory", "OUTPUT_DIRECTORY", "where generated files are written",
        _directory, os.path.join(".", "outputs"),
    ),
    Setting(
        "--cache-directory", "CACHE_DIRECTORY", "library caches (Hugging Face)", _directory, os.path.join(".", "cache")
    ),
    Setting("--allow-pickle-models", "ALLOW_PICKLE_MODELS", "true to accept pickle-based weights", _bool, "false"),
    Setting(
        "--max-loaded-models", "MAX_LOADED_MODELS", "models resident at once before idle ones are evicted",
        _int(1, 1024), "4",
    ),
    Setting(
        "--max-queue-per-device", "MAX_QUEUE_PER_DEVICE", "jobs waiting per device before RESOURCE_EXHAUSTED",
        _int(1, 100_000), "64",
    ),
    Setting(
        "--max-batch-size", "MAX_BATCH_SIZE", "rows merged into one dynamic batch (1 disables batching)",
        _int(1, 8192), "64",
    ),
    Setting(
        "--max-batch-delay-ms", "MAX_BATCH_DELAY_MS", "how long an idle device waits to fill a batch",
        _float(0, 10_000), "2",
    ),
    Setting(
        "--progress-interval-ms", "PROGRESS_INTERVAL_MS",
        "least time between a job's progress events; first and last step always sent (0 every step)",
        _float(0, 60_000), "250",
    ),
    Setting(
        "--job-retention-seconds", "JOB_RETENTION_SECONDS",
        "seconds a finished job's events stay for AttachJob, and its id is refused by Infer",
        _float(0, 86_400), "600",
    ),
    Setting(
        "--max-retained-jobs", "MAX_RETAINED_JOBS",
        "finished jobs kept for AttachJob at once, results included (in memory); the earliest finished go first",
        _int(0, 1_000_000), "1024",
    ),
    Setting(
        "--max-retained-progress-events", "MAX_RETAINED_PROGRESS_EVENTS",
        "progress events kept per job for AttachJob, the most recent ones (every other event is kept)",
        _int(0, 100_000), "100",
    ),
    Setting(
        "--embedding-cuda-graphs", "EMBEDDING_CUDA_GRAPHS",
        "replay small embedding passes from CUDA graphs on CUDA devices", _bool, "true",
    ),
    Setting(
        "--device-memory-fraction", "DEVICE_MEMORY_FRACTION", "share of a device's memory models may occupy",
        _float(0, 1), "0.9",
    ),
    Setting("--metrics-port", "METRICS_PORT", "Prometheus endpoint port, 0 any free, -1 off", _int(-1, 65535), "9101"),
    Setting(
        "--worker-token", "WORKER_TOKEN",
        "secret (at least 32 characters) every call must carry as `authorization: Bearer <token>`; "
        "required unless listening on loopback or with mutual TLS. Prefer the environment: "
        "command lines are visible to every user in ps",
        _token,
    ),
    Setting("--tls-cert", "WORKER_TLS_CERT", "server certificate chain (PEM file); with WORKER_TLS_KEY enables TLS", _text),
    Setting("--tls-key", "WORKER_TLS_KEY", "server private key (PEM file); with WORKER_TLS_CERT enables TLS", _text),
    Setting(
        "--tls-client-ca", "WORKER_TLS_CLIENT_CA", "CA (PEM file) that must have signed every caller's certificate: mutual TLS",
        _text,
    ),
)


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
    for setting in SETTINGS:
        parser.add_argument(setting.flag, dest=setting.env, help=setting.help)
    return parser


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Build settings from command-line flags, then the environment, then defaults."""
    try:
        args = vars(_parser().parse_args(list(argv)))
    except argparse.ArgumentError as exc:
        raise SettingsError(exc.argument_name or "argument", "", str(exc)) from None

    values: dict[str, object] = {}
    for setting in SETTINGS:
        raw = args.get(setting.env)
        if raw is None:
            raw = env.get(setting.env)
        values[setting.key] = setting.parse(setting.env, setting.default if raw in (None, "") else str(raw))
    tls = _tls(str(values.pop("tls_cert")), str(values.pop("tls_key")), str(values.pop("tls_client_ca")))
    _require_caller_authentication(str(values["host"]), values["worker_token"], tls)  # type: ignore[arg-type]
    return Settings(**values, tls=tls)  # type: ignore[arg-type]
