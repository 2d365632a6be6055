"""Entry point: ``python -m device_ops_worker``."""

from __future__ import annotations

import asyncio
import os
import sys

from .settings import SettingsError, parse_settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(f"device_ops_worker: {exc}", file=sys.stderr)
        return 2

    # Imported after settings so a bad setting is reported without paying for torch.
    from .logging_setup import configure_logging
    from .server import serve

    configure_logging(settings.log_level, settings.worker_id)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        print(f"device_ops_worker: cannot serve on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
