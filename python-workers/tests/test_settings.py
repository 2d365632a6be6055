"""Settings are parsed once; a bad one is named in one line and exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from device_ops_worker.settings import LogLevel, SettingsError, parse_settings

SRC = Path(__file__).resolve().parents[1] / "src"


def test_defaults() -> None:
    settings = parse_settings([], {})
    assert settings.host == "127.0.0.1"
    assert settings.port == 50051
    assert settings.log_level is LogLevel.INFO
    assert settings.ready_fd is None
    assert settings.parent_pid is None
    assert settings.allow_pickle_models is False
    assert settings.max_loaded_models == 4
    assert settings.max_queue_per_device == 64
    assert settings.metrics_port == 9101
    assert settings.progress_interval_ms == 250
    assert settings.job_retention_seconds == 600
    assert settings.max_retained_jobs == 1024
    assert settings.max_retained_progress_events == 100
    assert settings.embedding_cuda_graphs is True
    assert settings.model_directory.is_absolute()


def test_flags_win_over_environment() -> None:
    settings = parse_settings(["--port", "7000"], {"WORKER_PORT": "6000", "WORKER_ID": "w9", "LOG_LEVEL": "DEBUG"})
    assert settings.port == 7000
    assert settings.worker_id == "w9"
    assert settings.log_level is LogLevel.DEBUG


@pytest.mark.parametrize(
    ("argv", "env", "name"),
    [
        (["--port", "abc"], {}, "WORKER_PORT"),
        ([], {"WORKER_PORT": "70000"}, "WORKER_PORT"),
        ([], {"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ([], {"SHUTDOWN_GRACE_SECONDS": "-1"}, "SHUTDOWN_GRACE_SECONDS"),
        (["--ready-fd", "1"], {}, "WORKER_READY_FD"),
        ([], {"ALLOW_PICKLE_MODELS": "maybe"}, "ALLOW_PICKLE_MODELS"),
        ([], {"MAX_QUEUE_PER_DEVICE": "0"}, "MAX_QUEUE_PER_DEVICE"),
        ([], {"DEVICE_MEMORY_FRACTION": "1.5"}, "DEVICE_MEMORY_FRACTION"),
        ([], {"METRICS_PORT": "-5"}, "METRICS_PORT"),
        ([], {"PROGRESS_INTERVAL_MS": "-1"}, "PROGRESS_INTERVAL_MS"),
        ([], {"EMBEDDING_CUDA_GRAPHS": "sometimes"}, "EMBEDDING_CUDA_GRAPHS"),
    ],
)
def test_bad_setting_names_the_variable(argv: list[str], env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(argv, env)
    assert caught.value.name == name
    assert name in str(caught.value)


def test_main_exits_non_zero_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "device_ops_worker", "--log-level", "loud"],
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "LOG_LEVEL" in lines[0]
