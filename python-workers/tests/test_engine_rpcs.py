"""Every worker rpc and every task, through a real grpc.aio server on port 0,
with the demo models (real tiny diffusion pipeline, real MiniLM, TorchScript
models) and real tensors; status codes asserted over the wire."""

from __future__ import annotations

import asyncio
import hashlib
import json

import grpc
import numpy as np
import pytest
import pytest_asyncio
import torch
from grpc_health.v1 import health_pb2
from PIL import Image

from device_ops.v1 import inference_pb2, memory_pb2, models_pb2

from .engine_support import (
    EngineWorker,
    collect,
    copy_models,
    demo_models,
    embed,
    expect_status,
    from_tensor,
    kinds,
    png_bytes,
    read_until,
    start_engine,
    stop_engine,
    t2i,
    tensor,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def worker(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("engine")
    models = copy_models(demo_models(tmp_path_factory.getbasetemp()), base / "models")
    engine = await start_engine(base, models)
    yield engine
    await stop_engine(engine)


# ---------------------------------------------------------------- models


async def test_list_models_reports_the_repository(worker: EngineWorker) -> None:
    response = await worker.stub.ListModels(models_pb2.ListModelsRequest(), timeout=30)
    by_name = {m.name: m for m in response.models}
    assert set(by_name) == {"minilm", "tiny-mlp", "tiny-sd", "tiny-upscaler"}
    sd = by_name["tiny-sd"]
    assert sd.format == models_pb2.MODEL_FORMAT_DIFFUSERS
    assert sd.task == models_pb2.MODEL_TASK_TEXT_TO_IMAGE
    assert set(sd.tasks) == {
        models_pb2.MODEL_TASK_TEXT_TO_IMAGE,
        models_pb2.MODEL_TASK_IMAGE_TO_IMAGE,
        models_pb2.MODEL_TASK_INPAINTING,
    }
    on_disk = sum(p.stat().st_size for p in (worker.models / "tiny-sd").rglob("*") if p.is_file())
    assert sd.size_bytes == on_disk
    assert by_name["minilm"].task == models_pb2.MODEL_TASK_TEXT_EMBEDDING
    assert by_name["tiny-mlp"].format == models_pb2.MODEL_FORMAT_TORCHSCRIPT
    assert by_name["tiny-upscaler"].task == models_pb2.MODEL_TASK_UPSCALE


@pytest.mark.parametrize("name", ["minilm", "tiny-mlp", "tiny-sd", "tiny-upscaler"])
async def test_validate_demo_models(worker: EngineWorker, name: str) -> None:
    response = await worker.stub.ValidateModel(models_pb2.ValidateModelRequest(model=name), timeout=60)
    assert response.valid, response.problems
    assert response.model.validation == models_pb2.VALIDATION_STATE_VALID


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "/abs", ".hidden", "x" * 200, ""])
async def test_traversal_and_bad_names_are_invalid_argument(worker: EngineWorker, name: str) -> None:
    await expect_status(
        lambda: worker.stub.ValidateModel(models_pb2.ValidateModelRequest(model=name), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model",
    )
    await expect_status(
        lambda: worker.stub.LoadModel(models_pb2.LoadModelRequest(model=name), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model",
    )


async def test_unknown_model_is_not_found(worker: EngineWorker) -> None:
    await expect_status(
        lambda: worker.stub.LoadModel(models_pb2.LoadModelRequest(model="no-such-model"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "no-such-model",
    )


async def test_load_reports_footprint_and_unload_frees_it(worker: EngineWorker) -> None:
    loaded = await worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp", device_id=worker.cpu), timeout=60)
    assert not loaded.already_loaded
    assert loaded.placement.device_id == worker.cpu
    assert loaded.placement.dtype == "float32"
    # Linear(4, 3): 12 weights + 3 biases in float32.
    assert loaded.placement.footprint_bytes == 15 * 4
    again = await worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp", device_id=worker.cpu), timeout=60)
    assert again.already_loaded
    listed = {m.name: m for m in (await worker.stub.ListModels(models_pb2.ListModelsRequest(), timeout=30)).models}
    assert [p.device_id for p in listed["tiny-mlp"].placements] == [worker.cpu]
    unloaded = await worker.stub.UnloadModel(models_pb2.UnloadModelRequest(model="tiny-mlp"), timeout=30)
    assert unloaded.freed_bytes == 15 * 4
    await expect_status(
        lambda: worker.stub.UnloadModel(models_pb2.UnloadModelRequest(model="tiny-mlp"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "not loaded",
    )


async def test_unknown_device_and_dtype(worker: EngineWorker) -> None:
    await expect_status(
        lambda: worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp", device_id="GPU-nope"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "device_id",
    )
    await expect_status(
        lambda: worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp", dtype="float8"), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "dtype",
    )
    if not torch.cuda.is_available():
        await expect_status(
            lambda: worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp", dtype="float16"), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not supported",
        )


# ---------------------------------------------------------------- text-to-image


async def test_text_to_image_streams_events_and_writes_pngs(worker: EngineWorker) -> None:
    events = await collect(worker.stub.Infer(t2i("t2i-1", steps=4, images_per_prompt=2), timeout=120))
    assert kinds(events)[:3] == ["accepted", "queued", "started"]
    assert kinds(events)[-1] == "result"
    progress = [(e.progress.current, e.progress.total) for e in events if e.WhichOneof("event") == "progress"]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    result = events[-1].result
    assert result.seed == 7
    assert result.device_id == worker.cpu
    assert [f.path for f in result.files] == ["t2i-1/image-0.png", "t2i-1/image-1.png"]
    for file in result.files:
        path = worker.outputs / file.path
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == file.sha256
        assert file.size_bytes == len(data)
        with Image.open(path) as image:
            assert image.size == (64, 64) == (file.width, file.height)
            parameters = json.loads(image.text["parameters"])
        assert parameters["prompt"] == "a red bicycle"
        assert parameters["seed"] == 7
        assert parameters["steps"] == 4


async def test_progress_events_are_throttled_but_first_and_last_step_always_sent(
    worker: EngineWorker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    throttled = await start_engine(tmp_path_factory.mktemp("throttled"), worker.models, progress_interval_ms=60_000)
    try:
        events = await collect(throttled.stub.Infer(t2i("throttled", steps=6), timeout=120))
    finally:
        await stop_engine(throttled)
    progress = [(e.progress.current, e.progress.total) for e in events if e.WhichOneof("event") == "progress"]
    assert progress == [(1, 6), (6, 6)]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    # Fewer events, same job: the image equals the one of a worker sending every step.
    every_step = await collect(worker.stub.Infer(t2i("every-step", steps=6), timeout=120))
    assert len([e for e in every_step if e.WhichOneof("event") == "progress"]) == 6
    assert events[-1].result.files[0].sha256 == every_step[-1].result.files[0].sha256


async def test_same_seed_same_image_other_seed_other_image(worker: EngineWorker) -> None:
    first = (await collect(worker.stub.Infer(t2i("seed-a", seed=1234), timeout=120)))[-1].result
    second = (await collect(worker.stub.Infer(t2i("seed-b", seed=1234), timeout=120)))[-1].result
    third = (await collect(worker.stub.Infer(t2i("seed-c", seed=1235), timeout=120)))[-1].result
    assert first.files[0].sha256 == second.files[0].sha256
    assert first.files[0].sha256 != third.files[0].sha256


async def test_seed_is_drawn_and_reported_when_absent(worker: EngineWorker) -> None:
    result = (await collect(worker.stub.Infer(t2i("seed-drawn", seed=None), timeout=120)))[-1].result
    assert result.HasField("seed")


async def test_image_to_image_and_inpainting(worker: EngineWorker) -> None:
    init = png_bytes(64, 64)
    request = inference_pb2.InferRequest(
        job_id="i2i-1",
        model="tiny-sd",
        task=models_pb2.MODEL_TASK_IMAGE_TO_IMAGE,
        image_generation=inference_pb2.ImageGenerationInput(prompt="a blue sea", steps=4, strength=0.5, seed=3, init_image=init),
    )
    events = await collect(worker.stub.Infer(request, timeout=120))
    assert kinds(events)[-1] == "result"
    # strength 0.5 of 4 steps runs 2.
    assert [e.progress.total for e in events if e.WhichOneof("event") == "progress"] == [2, 2]
    assert (events[-1].result.files[0].width, events[-1].result.files[0].height) == (64, 64)

    mask = png_bytes(64, 64, (255, 255, 255))
    request = inference_pb2.InferRequest(
        job_id="inpaint-1",
        model="tiny-sd",
        task=models_pb2.MODEL_TASK_INPAINTING,
        image_generation=inference_pb2.ImageGenerationInput(
            prompt="a cat", steps=2, strength=1.0, seed=3, init_image=init, mask_image=mask
        ),
    )
    events = await collect(worker.stub.Infer(request, timeout=120))
    assert kinds(events)[-1] == "result"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"side": 65}, "image_generation.width: 65 is not a multiple of 8"),
        ({"side": 4096}, "image_generation.width: 4096 is outside 64..2048"),
        ({"prompt": "   "}, "image_generation.prompt: must not be empty"),
        ({"steps": 0}, "image_generation.steps"),
        ({"steps": 1000}, "image_generation.steps"),
        ({"guidance_scale": -1.0}, "image_generation.guidance_scale"),
        ({"images_per_prompt": 99}, "image_generation.images_per_prompt"),
        ({"scheduler": "NotAScheduler"}, "scheduler"),
    ],
)
async def test_bad_generation_input_is_invalid_argument(worker: EngineWorker, change: dict, fragment: str) -> None:
    await expect_status(
        lambda: worker.stub.Infer(t2i("bad-gen", **change), timeout=30), grpc.StatusCode.INVALID_ARGUMENT, fragment
    )
    assert not (worker.outputs / "bad-gen").exists()


async def test_wrong_task_for_model_is_failed_precondition(worker: EngineWorker) -> None:
    request = embed("wrong-task", ["hello"])
    request.model = "tiny-sd"
    await expect_status(lambda: worker.stub.Infer(request, timeout=30), grpc.StatusCode.FAILED_PRECONDITION, "tiny-sd")


async def test_input_must_match_task(worker: EngineWorker) -> None:
    request = t2i("mismatch")
    request.task = models_pb2.MODEL_TASK_TEXT_EMBEDDING
    request.model = "minilm"
    await expect_status(lambda: worker.stub.Infer(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "text_embedding")


@pytest.mark.parametrize("job_id", ["../escape", "a/b", "", "x" * 300])
async def test_bad_job_id_is_invalid_argument(worker: EngineWorker, job_id: str) -> None:
    await expect_status(lambda: worker.stub.Infer(t2i(job_id), timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "job_id")


async def test_unknown_model_and_device_in_infer(worker: EngineWorker) -> None:
    request = t2i("unknown-model")
    request.model = "ghost"
    await expect_status(lambda: worker.stub.Infer(request, timeout=30), grpc.StatusCode.NOT_FOUND, "ghost")
    request = t2i("unknown-device")
    request.device_id = "GPU-0000"
    await expect_status(lambda: worker.stub.Infer(request, timeout=30), grpc.StatusCode.NOT_FOUND, "device_id")


# ---------------------------------------------------------------- cancellation


async def test_cancel_job_mid_diffusion(worker: EngineWorker) -> None:
    call = worker.stub.Infer(t2i("cancel-me", steps=40, side=256), timeout=120)
    events = await read_until(call, "progress", current=2)
    response = await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="cancel-me"), timeout=10)
    assert response.cancelled
    events += await collect(call)
    assert kinds(events)[-1] == "cancelled"
    assert events[-1].cancelled.reason == "cancel-requested"
    steps = [e.progress.current for e in events if e.WhichOneof("event") == "progress"]
    assert max(steps) < 40
    assert not (worker.outputs / "cancel-me").exists()
    # Ended: cancelling again says so; an id never seen is NOT_FOUND.
    again = await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="cancel-me"), timeout=10)
    assert not again.cancelled
    await expect_status(
        lambda: worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="never-ran"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "never-ran",
    )
    # Nothing stays pinned; the worker keeps serving.
    assert all(p.in_flight == 0 for p in worker.running.manager.placements())
    health = await worker.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_client_that_goes_away_cancels_the_job(worker: EngineWorker) -> None:
    call = worker.stub.Infer(t2i("walk-away", steps=40, side=256), timeout=120)
    await read_until(call, "progress")
    call.cancel()
    for _ in range(100):
        if worker.running.inference.active_jobs == 0:
            break
        await asyncio.sleep(0.05)
    assert worker.running.inference.active_jobs == 0
    response = await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="walk-away"), timeout=10)
    assert not response.cancelled
    assert not (worker.outputs / "walk-away").exists()
    cancelled = worker.running.metrics.requests.labels("text-to-image", "tiny-sd", "cancelled")._value.get()
    assert cancelled >= 1


# ---------------------------------------------------------------- embeddings


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_embeddings_have_real_semantics(worker: EngineWorker) -> None:
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    events = await collect(worker.stub.Infer(embed("embed-1", texts), timeout=120))
    result = events[-1].result
    vectors = np.array([list(e.values) for e in result.embeddings])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2]) + 0.3


async def test_concurrent_embeddings_are_batched_and_each_gets_its_rows(worker: EngineWorker) -> None:
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'finance'}" for i in range(24)]
    alone = await collect(worker.stub.Infer(embed("alone", texts[:1], normalize=False), timeout=120))
    reference = np.array(alone[-1].result.embeddings[0].values)

    calls = [worker.stub.Infer(embed(f"batch-{i}", [text], normalize=False), timeout=120) for i, text in enumerate(texts)]
    results = [(await collect(call))[-1].result for call in calls]
    # Each caller gets exactly its own row back.
    for text, result in zip(texts, results, strict=True):
        assert len(result.embeddings) == 1
    assert np.allclose(np.array(results[0].embeddings[0].values), reference, atol=1e-4)
    rows = np.array([r.embeddings[0].values for r in results])
    assert len({tuple(np.round(row, 5)) for row in rows}) == len(texts)
    assert max(r.batch_size for r in results) > 1


async def test_large_and_small_embedding_requests_batched_together_get_their_own_rows(worker: EngineWorker) -> None:
    # A request of over 4,096 characters is tokenized before it is queued (the
    # model being resident); single texts are tokenized on the device thread;
    # both kinds share a batch.
    large = [f"paragraph {i}: " + ("cats sleep in the sun while markets move " * (i % 5 + 1)) for i in range(40)]
    small = [f"short text {i}" for i in range(6)]
    assert sum(map(len, large)) > 4096
    await collect(worker.stub.Infer(embed("warm-minilm", ["warm"]), timeout=120))
    assert worker.running.manager.resident("minilm", worker.cpu, torch.float32) is not None
    expected_large = await collect(worker.stub.Infer(embed("large-alone", large, normalize=False), timeout=120))
    expected_small = [
        (await collect(worker.stub.Infer(embed(f"small-alone-{i}", [text], normalize=False), timeout=120)))[-1].result
        for i, text in enumerate(small)
    ]
    # A long diffusion job holds the device while the embedding requests queue up behind it.
    blocker = worker.stub.Infer(t2i("blocker", steps=150, side=256), timeout=120)
    await read_until(blocker, "started")
    calls = [worker.stub.Infer(embed("large-batched", large, normalize=False), timeout=120)]
    calls += [worker.stub.Infer(embed(f"small-batched-{i}", [t], normalize=False), timeout=120) for i, t in enumerate(small)]
    queue = worker.running.devices.get(worker.cpu).queue
    for _ in range(200):
        if queue.depth == len(calls):
            break
        await asyncio.sleep(0.05)
    assert queue.depth == len(calls)
    await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="blocker"), timeout=10)
    await collect(blocker)
    results = [(await collect(call))[-1].result for call in calls]
    assert {result.batch_size for result in results} == {len(calls)}
    got_large = np.array([list(e.values) for e in results[0].embeddings])
    want_large = np.array([list(e.values) for e in expected_large[-1].result.embeddings])
    assert got_large.shape == (40, 384)
    np.testing.assert_allclose(got_large, want_large, atol=1e-4)
    for result, expected in zip(results[1:], expected_small, strict=True):
        np.testing.assert_allclose(result.embeddings[0].values, expected.embeddings[0].values, atol=1e-4)


async def test_bad_embedding_input(worker: EngineWorker) -> None:
    await expect_status(
        lambda: worker.stub.Infer(embed("empty-list", []), timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "text_embedding.texts"
    )
    await expect_status(
        lambda: worker.stub.Infer(embed("empty-text", ["ok", ""]), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
        "text_embedding.texts[1]",
    )


# ---------------------------------------------------------------- tensors


def _mlp_request(job_id: str, array: np.ndarray, name: str = "x") -> inference_pb2.InferRequest:
    request = inference_pb2.InferRequest(job_id=job_id, model="tiny-mlp", task=models_pb2.MODEL_TASK_TENSOR)
    request.tensor.inputs[name].CopyFrom(tensor(array))
    return request


async def test_tensor_task_matches_the_module(worker: EngineWorker) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    events = await collect(worker.stub.Infer(_mlp_request("tensor-1", x), timeout=60))
    y = from_tensor(events[-1].result.tensors["y"])
    module = torch.jit.load(str(worker.models / "tiny-mlp" / "model.pt"))
    expected = module(torch.from_numpy(x)).detach().numpy()
    assert y.shape == (2, 3)
    assert np.allclose(y, expected, atol=1e-6)


async def test_concurrent_tensor_requests_are_batched_row_exact(worker: EngineWorker) -> None:
    inputs = [np.full((1, 4), i, dtype=np.float32) for i in range(10)]
    calls = [worker.stub.Infer(_mlp_request(f"tb-{i}", x), timeout=60) for i, x in enumerate(inputs)]
    results = [(await collect(call))[-1].result for call in calls]
    module = torch.jit.load(str(worker.models / "tiny-mlp" / "model.pt"))
    for x, result in zip(inputs, results, strict=True):
        assert np.allclose(from_tensor(result.tensors["y"]), module(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("array", "name", "fragment"),
    [
        (np.array([[np.nan, 0, 0, 0]], dtype=np.float32), "x", "tensor.inputs.x: contains NaN"),
        (np.zeros((2, 5), dtype=np.float32), "x", "tensor.inputs.x.shape"),
        (np.zeros((2, 4), dtype=np.float64), "x", "tensor.inputs.x.dtype"),
        (np.zeros((2, 4), dtype=np.float32), "z", "tensor.inputs.z"),
    ],
)
async def test_bad_tensors_are_invalid_argument(worker: EngineWorker, array: np.ndarray, name: str, fragment: str) -> None:
    await expect_status(
        lambda: worker.stub.Infer(_mlp_request("bad-tensor", array, name), timeout=30), grpc.StatusCode.INVALID_ARGUMENT, fragment
    )


async def test_tensor_data_length_must_match(worker: EngineWorker) -> None:
    request = inference_pb2.InferRequest(job_id="short", model="tiny-mlp", task=models_pb2.MODEL_TASK_TENSOR)
    request.tensor.inputs["x"].CopyFrom(inference_pb2.Tensor(dtype="float32", shape=[1, 4], data=b"\0" * 12))
    await expect_status(lambda: worker.stub.Infer(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "16")


# ---------------------------------------------------------------- postprocessing


def _post(job_id: str, task: int, model: str = "", **kw) -> inference_pb2.InferRequest:
    return inference_pb2.InferRequest(job_id=job_id, model=model, task=task, postprocess=inference_pb2.PostprocessInput(**kw))


async def test_lanczos_and_model_upscale_and_enhance(worker: EngineWorker) -> None:
    image = png_bytes(40, 30)
    lanczos = (await collect(worker.stub.Infer(_post("up-l", models_pb2.MODEL_TASK_UPSCALE, image=image, scale=4), timeout=60)))[-1]
    assert (lanczos.result.files[0].width, lanczos.result.files[0].height) == (160, 120)
    model = (await collect(worker.stub.Infer(_post("up-m", models_pb2.MODEL_TASK_UPSCALE, "tiny-upscaler", image=image), timeout=60)))[-1]
    assert (model.result.files[0].width, model.result.files[0].height) == (80, 60)
    assert model.result.model == "tiny-upscaler"
    enhanced = (
        await collect(
            worker.stub.Infer(
                _post("enh", models_pb2.MODEL_TASK_ENHANCE, source_output="up-l/upscale-0.png", adjustments={"contrast": 1.5}),
                timeout=60,
            )
        )
    )[-1]
    assert (enhanced.result.files[0].width, enhanced.result.files[0].height) == (160, 120)
    assert (worker.outputs / "enh" / "enhance-0.png").is_file()


@pytest.mark.parametrize(
    ("kwargs", "code", "fragment"),
    [
        ({"image": b"not an image", "scale": 2}, grpc.StatusCode.INVALID_ARGUMENT, "postprocess.image"),
        ({"image": png_bytes(8, 8), "scale": 3}, grpc.StatusCode.INVALID_ARGUMENT, "scale"),
        ({"source_output": "../../etc/passwd"}, grpc.StatusCode.INVALID_ARGUMENT, "source_output"),
        ({"source_output": "nope/none.png"}, grpc.StatusCode.NOT_FOUND, "source_output"),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "exactly one"),
    ],
)
async def test_bad_postprocess_input(worker: EngineWorker, kwargs: dict, code: grpc.StatusCode, fragment: str) -> None:
    await expect_status(lambda: worker.stub.Infer(_post("bad-post", models_pb2.MODEL_TASK_UPSCALE, **kwargs), timeout=30), code, fragment)


async def test_bad_enhance_adjustment(worker: EngineWorker) -> None:
    request = _post("bad-enh", models_pb2.MODEL_TASK_ENHANCE, image=png_bytes(8, 8), adjustments={"glow": 2.0})
    await expect_status(lambda: worker.stub.Infer(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "adjustments.glow")


# ---------------------------------------------------------------- memory


async def test_memory_status_and_clear(worker: EngineWorker) -> None:
    await worker.stub.LoadModel(models_pb2.LoadModelRequest(model="tiny-mlp", device_id=worker.cpu), timeout=60)
    status = await worker.stub.GetMemoryStatus(memory_pb2.GetMemoryStatusRequest(device_id=worker.cpu), timeout=30)
    [cpu] = status.devices
    footprints = {m.model: m.footprint_bytes for m in cpu.models}
    assert footprints["tiny-mlp"] == 60
    assert cpu.total_bytes > cpu.used_bytes > 0
    assert not cpu.HasField("allocated_bytes")  # no allocator counter on the CPU
    cleared = await worker.stub.ClearMemory(memory_pb2.ClearMemoryRequest(device_id=worker.cpu, unload_idle=True), timeout=60)
    assert "tiny-mlp" in cleared.unloaded_models
    assert cleared.freed_bytes == sum(footprints[name] for name in cleared.unloaded_models)
    assert worker.running.manager.placements() == []
    await expect_status(
        lambda: worker.stub.GetMemoryStatus(memory_pb2.GetMemoryStatusRequest(device_id="GPU-x"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "device_id",
    )
