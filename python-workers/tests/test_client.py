"""A client without the gateway generates an image and an embedding from the
demo models, through a worker process started as `npm start` starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .engine_support import copy_models, demo_models

SRC = Path(__file__).resolve().parents[1] / "src"


def test_cli_client_generates_an_image_and_an_embedding(tmp_path: Path, tmp_path_factory) -> None:
    models = copy_models(demo_models(tmp_path_factory.getbasetemp()), tmp_path / "models", ["tiny-sd", "minilm"])
    outputs = tmp_path / "outputs"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    read_end, write_end = os.pipe()
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "device_ops_worker", "--port", "0", "--ready-fd", str(write_end),
            "--metrics-port", "-1", "--model-directory", str(models), "--output-directory", str(outputs),
            "--cache-directory", str(tmp_path / "cache"),
        ],
        env=env,
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as ready:
            address = f"127.0.0.1:{json.loads(ready.readline())['port']}"

        def client(*args: str) -> dict:
            done = subprocess.run(
                [sys.executable, "-m", "device_ops_worker_tools.client", "--address", address, *args],
                env=env, capture_output=True, text=True, timeout=300, check=True,
            )
            return json.loads(done.stdout)

        image = client("image", "a lighthouse at dusk", "--steps", "3", "--size", "64", "--seed", "5")
        [file] = image["files"]
        assert (outputs / file["path"]).is_file()
        assert (file["width"], file["height"]) == (64, 64)
        embedding = client("embed", "first text", "second text")
        assert embedding["dimensions"] == [384, 384]
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
