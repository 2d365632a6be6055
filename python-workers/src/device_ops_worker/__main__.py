"""Entry point: ``python -m device_ops_worker``."""

from __future__ import annotations

import asyncio
import os
import sys

from .settings import Settings, SettingsError, parse_settings


def _offline_environment(settings: Settings) -> None:
    # Models come only from MODEL_DIRECTORY: libraries must never reach for a
    # hub, and their caches live where the operator said.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("HF_HOME", str(settings.cache_directory / "huggingface"))


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        # One line naming the setting, e.g. "WORKER_TOKEN is required when
        # listening on 0.0.0.0 …"; never a secret's value.
        print(f"device_ops_worker: {exc}", file=sys.stderr)
        return 2
    # Read once into settings; libraries and their subprocesses need not inherit it.
    os.environ.pop("WORKER_TOKEN", None)
    _offline_environment(settings)

    # Imported after settings so a bad setting is reported without paying for torch.
    from .logging_setup import configure_logging
    from .server import serve

    configure_logging(settings.log_level, settings.worker_id)
    try:
        return asyncio.run(serve(settings))
    except OSError as exc:
        print(f"device_ops_worker: cannot serve on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
