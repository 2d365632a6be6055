"""Shared pieces of the engine tests: demo models built once per session, a
real grpc.aio worker on port 0 over them, and small wire helpers."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2_grpc
from PIL import Image

from device_ops.v1 import inference_pb2, models_pb2, worker_service_pb2_grpc
from device_ops_worker.server import RunningServer, start_server
from device_ops_worker_tools.demo_models import prepare_demo_models

from .conftest import make_settings

_DEMO_CACHE: dict[str, Path] = {}


def demo_models(base: Path) -> Path:
    """The demo models, built once per test session and copied per user."""
    if "dir" not in _DEMO_CACHE:
        target = base / "demo-models"
        prepare_demo_models(target)
        _DEMO_CACHE["dir"] = target
    return _DEMO_CACHE["dir"]


def copy_models(source: Path, target: Path, names: list[str] | None = None) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if names is None or entry.name in names:
            if entry.is_dir():
                shutil.copytree(entry, target / entry.name)
            else:
                shutil.copy2(entry, target / entry.name)
    return target


@dataclass
class EngineWorker:
    running: RunningServer
    channel: grpc.aio.Channel
    stub: worker_service_pb2_grpc.WorkerServiceStub
    health: health_pb2_grpc.HealthStub
    models: Path
    outputs: Path

    @property
    def cpu(self) -> str:
        return self.running.devices.cpu().id


async def start_engine(tmp: Path, models: Path, **overrides: object) -> EngineWorker:
    settings = make_settings(tmp, model_directory=models, **overrides)
    running = await start_server(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    return EngineWorker(
        running=running,
        channel=channel,
        stub=worker_service_pb2_grpc.WorkerServiceStub(channel),
        health=health_pb2_grpc.HealthStub(channel),
        models=models,
        outputs=settings.output_directory,
    )


async def stop_engine(worker: EngineWorker) -> None:
    await worker.channel.close()
    await worker.running.stop(0)


async def collect(call) -> list[inference_pb2.InferEvent]:  # noqa: ANN001 - a grpc.aio stream call
    """Every remaining event of a stream (read API, so it mixes with read_until)."""
    events = []
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


async def read_until(call, kind: str, *, current: int | None = None) -> list[inference_pb2.InferEvent]:  # noqa: ANN001
    """Read events up to the first of `kind` (and, for progress, step `current`)."""
    events = []
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
        if event.WhichOneof("event") == kind and (current is None or event.progress.current == current):
            return events
    raise AssertionError(f"stream ended before a {kind} event: {[e.WhichOneof('event') for e in events]}")


def kinds(events: list[inference_pb2.InferEvent]) -> list[str]:
    return [event.WhichOneof("event") for event in events]


def png_bytes(width: int, height: int, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def tensor(array: np.ndarray) -> inference_pb2.Tensor:
    array = np.ascontiguousarray(array)
    return inference_pb2.Tensor(dtype=array.dtype.name, shape=list(array.shape), data=array.tobytes())


def from_tensor(message: inference_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(message.data, dtype=np.dtype(message.dtype)).reshape(tuple(message.shape))


def t2i(job_id: str, prompt: str = "a red bicycle", *, steps: int = 3, seed: int | None = 7, side: int = 64, **kw):
    generation = inference_pb2.ImageGenerationInput(prompt=prompt, steps=steps, width=side, height=side, **kw)
    if seed is not None:
        generation.seed = seed
    return inference_pb2.InferRequest(
        job_id=job_id, model="tiny-sd", task=models_pb2.MODEL_TASK_TEXT_TO_IMAGE, image_generation=generation
    )


def embed(job_id: str, texts: list[str], normalize: bool = True) -> inference_pb2.InferRequest:
    return inference_pb2.InferRequest(
        job_id=job_id,
        model="minilm",
        task=models_pb2.MODEL_TASK_TEXT_EMBEDDING,
        text_embedding=inference_pb2.TextEmbeddingInput(texts=texts, normalize=normalize),
    )


async def expect_status(call, code: grpc.StatusCode, fragment: str = "") -> str:  # noqa: ANN001
    """Call (unary or stream) and assert it ends with `code` and a message containing `fragment`."""
    error = await rpc_error(call)
    assert error.code() == code, error.details()
    assert fragment in (error.details() or ""), error.details()
    return error.details() or ""


async def rpc_error(call) -> grpc.aio.AioRpcError:  # noqa: ANN001
    try:
        result = call()
        if hasattr(result, "read"):
            await collect(result)
        else:
            await result
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")
