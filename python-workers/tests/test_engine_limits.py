"""Limits and faults, each through its own real worker: a model too big for
the device, LRU eviction that spares busy models, a full queue, corrupted
model files, and the metrics endpoint."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from device_ops.v1 import inference_pb2, models_pb2

from .engine_support import collect, copy_models, demo_models, kinds, read_until, rpc_error, start_engine, stop_engine, t2i


def _models(tmp: Path, base: Path, names: list[str]) -> Path:
    return copy_models(demo_models(base), tmp / "models", names)


async def test_model_too_big_is_refused_before_loading(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = _models(tmp_path, tmp_path_factory.getbasetemp(), ["minilm", "tiny-sd"])
    # A budget of a few kilobytes of the machine's memory: MiniLM (90 MB) cannot fit.
    worker = await start_engine(tmp_path, models, device_memory_fraction=1e-9)
    try:
        error = await rpc_error(lambda: worker.stub.LoadModel(models_pb2.LoadModelRequest(model="minilm"), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "does not fit" in error.details() and "bytes" in error.details()
        listed = await worker.stub.ListModels(models_pb2.ListModelsRequest(), timeout=30)
        assert all(not m.placements for m in listed.models)
        # Lazily loaded through Infer: accepted, then a terminal error with the code.
        events = await collect(worker.stub.Infer(t2i("too-big"), timeout=60))
        assert kinds(events)[-1] == "error"
        assert events[-1].error.code == "RESOURCE_EXHAUSTED"
        assert worker.running.manager.placements() == []
        health = await worker.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await stop_engine(worker)


async def test_lru_eviction_spares_models_with_work_in_flight(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = _models(tmp_path, tmp_path_factory.getbasetemp(), ["tiny-mlp", "tiny-upscaler", "tiny-sd"])
    worker = await start_engine(tmp_path, models, max_loaded_models=1)
    try:
        await worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp"), timeout=60)
        await worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-upscaler"), timeout=60)
        assert [p.model for p in worker.running.manager.placements()] == ["tiny-upscaler"]

        # tiny-sd runs one job and has a second one queued. A load issued now
        # runs on the device thread between the two: the queued job pins
        # tiny-sd, so it must not be evicted and the load is refused.
        running = worker.stub.Infer(t2i("busy", steps=30, side=256), timeout=120)
        await read_until(running, "started")
        queued = worker.stub.Infer(t2i("next", steps=2), timeout=120)
        assert [(await queued.read()).WhichOneof("event") for _ in range(2)] == ["accepted", "queued"]
        error = await rpc_error(lambda: worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp"), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MAX_LOADED_MODELS=1" in error.details()
        assert kinds(await collect(running))[-1] == "result"
        assert kinds(await collect(queued))[-1] == "result"
        assert [p.model for p in worker.running.manager.placements()] == ["tiny-sd"]
        # Idle again: evictable.
        await worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp"), timeout=60)
        assert [p.model for p in worker.running.manager.placements()] == ["tiny-mlp"]
    finally:
        await stop_engine(worker)


async def test_full_queue_refuses_at_once(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = _models(tmp_path, tmp_path_factory.getbasetemp(), ["tiny-sd"])
    worker = await start_engine(tmp_path, models, max_queue_per_device=1)
    try:
        running = worker.stub.Infer(t2i("q-running", steps=60, side=256), timeout=120)
        await read_until(running, "started")
        waiting = worker.stub.Infer(t2i("q-waiting", steps=2), timeout=120)
        first = [await waiting.read(), await waiting.read()]
        assert kinds(first) == ["accepted", "queued"]
        assert first[1].queued.position == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await rpc_error(lambda: worker.stub.Infer(t2i("q-refused"), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full: 1 of 1" in error.details()
        assert loop.time() - started < 2
        # Cancelling the queued job withdraws it without running it.
        await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="q-waiting"), timeout=10)
        rest = await collect(waiting)
        assert kinds(rest) == ["cancelled"]
        await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="q-running"), timeout=10)
        assert kinds(await collect(running))[-1] == "cancelled"
    finally:
        await stop_engine(worker)


async def test_corrupted_weights_and_checksum_mismatch(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = _models(tmp_path, tmp_path_factory.getbasetemp(), ["tiny-sd", "tiny-mlp"])
    unet = next((models / "tiny-sd" / "unet").glob("*.safetensors"))
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    manifest_path = models / "tiny-mlp" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["model.pt"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    worker = await start_engine(tmp_path, models)
    try:
        report = await worker.stub.ValidateModel(models_pb2.ValidateModelRequest(model="tiny-sd"), timeout=60)
        assert not report.valid
        assert any("unet/" in problem for problem in report.problems)
        error = await rpc_error(lambda: worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp"), timeout=60))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "sha256" in error.details()
        error = await rpc_error(lambda: worker.stub.Infer(t2i("corrupt"), timeout=60))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert worker.running.manager.placements() == []
        health = await worker.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await stop_engine(worker)


async def test_pickle_weights_are_refused_unless_allowed(tmp_path: Path) -> None:
    import torch

    models = tmp_path / "models"
    models.mkdir()
    torch.save({"weight": torch.zeros(2)}, models / "state.pt")
    worker = await start_engine(tmp_path, models)
    try:
        listed = await worker.stub.ListModels(models_pb2.ListModelsRequest(), timeout=30)
        assert [m.name for m in listed.models] == []  # a state dict is no servable model
    finally:
        await stop_engine(worker)


async def test_metrics_endpoint_counts_jobs(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = _models(tmp_path, tmp_path_factory.getbasetemp(), ["tiny-mlp"])
    worker = await start_engine(tmp_path, models, metrics_port=0)
    try:
        import numpy as np

        from .engine_support import tensor

        request = inference_pb2.InferRequest(job_id="metered", model="tiny-mlp", task=models_pb2.MODEL_TASK_TENSOR)
        request.tensor.inputs["x"].CopyFrom(tensor(np.zeros((1, 4), dtype=np.float32)))
        await collect(worker.stub.Infer(request, timeout=60))
        unknown = inference_pb2.InferRequest(job_id="refused", model="no-such-model", task=models_pb2.MODEL_TASK_TENSOR)
        unknown.tensor.inputs["x"].CopyFrom(tensor(np.zeros((1, 4), dtype=np.float32)))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await collect(worker.stub.Infer(unknown, timeout=60))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        port = worker.running.metrics_port
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
        assert 'device_ops_worker_inference_requests_total{model="tiny-mlp",outcome="success",task="tensor"} 1.0' in body
        assert f'device_ops_worker_loaded_models{{device="{worker.cpu}"}} 1.0' in body
        assert 'device_ops_worker_model_memory_bytes{device="' in body
        assert "device_ops_worker_queue_wait_seconds_count" in body
        assert 'device_ops_worker_inference_refused_total{status="NOT_FOUND"} 1.0' in body
        assert "process_resident_memory_bytes" in body
    finally:
        await stop_engine(worker)
