"""Jobs that outlive their caller (issue 16, point 4), through a real grpc.aio
server on port 0 with the demo models: AttachJob replays a job's kept events
from a sequence and follows it live; a job kept running survives its caller;
a job id never runs twice; what is kept is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from device_ops.v1 import devices_pb2, inference_pb2

from .engine_support import (
    EngineWorker,
    collect,
    copy_models,
    demo_models,
    embed,
    expect_status,
    kinds,
    read_until,
    start_engine,
    stop_engine,
    t2i,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Long enough on a CPU (~50 ms a step) for a caller to come and go mid-job.
LONG = {"steps": 60, "side": 256}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def worker(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("attach")
    models = copy_models(demo_models(tmp_path_factory.getbasetemp()), base / "models", ["tiny-sd", "minilm"])
    engine = await start_engine(base, models)
    yield engine
    await stop_engine(engine)


def attach(worker: EngineWorker, job_id: str, after: int = 0):  # noqa: ANN201 - a grpc.aio stream call
    return worker.stub.AttachJob(inference_pb2.AttachJobRequest(job_id=job_id, after_sequence=after), timeout=120)


def kept_running(request: inference_pb2.InferRequest) -> inference_pb2.InferRequest:
    request.keep_running_on_disconnect = True
    return request


async def eventually(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    assert condition()


def sequences(events: list[inference_pb2.InferEvent]) -> list[int]:
    return [event.sequence for event in events]


def requests_counted(worker: EngineWorker, outcome: str) -> float:
    return worker.running.metrics.requests.labels("text-to-image", "tiny-sd", outcome)._value.get()


# ---------------------------------------------------------------- replay, then live


async def test_attach_mid_job_replays_after_the_sequence_then_follows_live(worker: EngineWorker) -> None:
    call = worker.stub.Infer(t2i("attach-mid", **LONG), timeout=120)
    seen = await read_until(call, "progress", current=3)
    after = seen[-2].sequence  # the event before progress 3
    follower = attach(worker, "attach-mid", after)
    first = await follower.read()
    # Still running once the replay began: what follows the replay comes live.
    assert worker.running.inference.active_jobs == 1
    attached = [first] + await collect(follower)
    full = seen + await collect(call)
    assert sequences(full) == list(range(1, len(full) + 1))
    assert attached == [event for event in full if event.sequence > after]
    assert sequences(attached) == list(range(after + 1, len(full) + 1))
    assert kinds(attached)[-1] == "result"
    assert await follower.code() == grpc.StatusCode.OK


async def test_attach_after_the_job_ended_replays_it_all_and_ends(worker: EngineWorker) -> None:
    full = await collect(worker.stub.Infer(t2i("attach-ended", steps=4), timeout=120))
    assert kinds(full)[-1] == "result"
    assert await collect(attach(worker, "attach-ended")) == full
    assert await collect(attach(worker, "attach-ended", full[2].sequence)) == full[3:]
    # Nothing after the terminal event: an empty stream that ends OK.
    assert await collect(attach(worker, "attach-ended", full[-1].sequence)) == []


async def test_attach_from_a_sequence_the_job_has_not_reached_skips_up_to_it(worker: EngineWorker) -> None:
    call = worker.stub.Infer(t2i("attach-ahead", **LONG), timeout=120)
    await read_until(call, "started")
    attached = await collect(attach(worker, "attach-ahead", 6))
    full = await collect(call)
    assert attached and sequences(attached) == list(range(7, 7 + len(attached)))
    assert kinds(attached)[-1] == "result"
    assert full[-len(attached) :] == attached


async def test_several_attachers_see_the_same_events_and_the_job_is_counted_once(worker: EngineWorker) -> None:
    before = requests_counted(worker, "success")
    call = worker.stub.Infer(t2i("attach-many", **LONG), timeout=120)
    await read_until(call, "progress", current=1)
    followers = [attach(worker, "attach-many"), attach(worker, "attach-many", 3)]
    # A follower that goes away never cancels the job.
    leaving = attach(worker, "attach-many")
    await leaving.read()
    leaving.cancel()
    first, second = [await collect(follower) for follower in followers]
    await collect(call)
    assert kinds(first)[-1] == "result"
    assert sequences(first) == list(range(1, len(first) + 1))
    assert second == first[3:]
    await eventually(lambda: requests_counted(worker, "success") == before + 1)
    await asyncio.sleep(0.2)
    assert requests_counted(worker, "success") == before + 1


# ---------------------------------------------------------------- callers that go away


async def test_a_job_kept_running_survives_its_caller(worker: EngineWorker) -> None:
    call = worker.stub.Infer(kept_running(t2i("kept", **LONG)), timeout=120)
    seen = await read_until(call, "progress", current=2)
    call.cancel()
    replayed = await collect(attach(worker, "kept"))
    assert replayed[: len(seen)] == seen
    assert sequences(replayed) == list(range(1, len(replayed) + 1))
    assert kinds(replayed).count("progress") == LONG["steps"]
    assert kinds(replayed)[-1] == "result"
    [file] = replayed[-1].result.files
    assert (worker.outputs / file.path).is_file()
    response = await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="kept"), timeout=10)
    assert not response.cancelled


async def test_a_job_not_kept_running_is_cancelled_when_its_caller_goes_away(worker: EngineWorker) -> None:
    call = worker.stub.Infer(t2i("not-kept", **LONG), timeout=120)
    await read_until(call, "progress", current=2)
    call.cancel()
    replayed = await collect(attach(worker, "not-kept"))
    assert kinds(replayed)[-1] == "cancelled"
    assert replayed[-1].cancelled.reason == "client-disconnected"
    assert not (worker.outputs / "not-kept").exists()


async def test_cancel_job_stops_a_kept_running_job_with_no_stream_open(worker: EngineWorker) -> None:
    call = worker.stub.Infer(kept_running(t2i("kept-cancel", **LONG)), timeout=120)
    await read_until(call, "progress", current=1)
    call.cancel()
    await asyncio.sleep(0.2)
    assert worker.running.inference.active_jobs == 1  # caller gone, job running
    response = await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="kept-cancel"), timeout=10)
    assert response.cancelled
    replayed = await collect(attach(worker, "kept-cancel"))
    assert kinds(replayed)[-1] == "cancelled"
    assert replayed[-1].cancelled.reason == "cancel-requested"
    assert kinds(replayed).count("progress") < LONG["steps"]
    assert not (worker.outputs / "kept-cancel").exists()


# ---------------------------------------------------------------- never run twice


def in_use(job_id: str, state: str) -> str:
    return f"job_id: job id '{job_id}' is already in use on this worker ({state}); use a new id"


async def cpu_load(worker: EngineWorker) -> tuple[int, int]:
    """(running, queued) jobs of the CPU device, as ListDevices reports them."""
    response = await worker.stub.ListDevices(devices_pb2.ListDevicesRequest(), timeout=30)
    [cpu] = [device for device in response.devices if device.id == worker.cpu]
    return cpu.running_jobs, cpu.queued_jobs


async def test_a_running_or_queued_job_id_is_refused_and_the_jobs_are_untouched(worker: EngineWorker) -> None:
    refused = worker.running.metrics.refused_calls.labels("ALREADY_EXISTS")._value.get()
    call = worker.stub.Infer(t2i("dup-running", **LONG), timeout=120)
    seen = await read_until(call, "started")
    # One device: this one waits behind the running job.
    queued = worker.stub.Infer(embed("dup-queued", ["hello"]), timeout=120)
    queued_seen = await read_until(queued, "queued")
    load = await cpu_load(worker)
    await expect_status(
        lambda: worker.stub.Infer(t2i("dup-running", steps=2), timeout=30),
        grpc.StatusCode.ALREADY_EXISTS,
        in_use("dup-running", "running"),
    )
    await expect_status(
        lambda: worker.stub.Infer(embed("dup-queued", ["other"]), timeout=30),
        grpc.StatusCode.ALREADY_EXISTS,
        in_use("dup-queued", "running"),
    )
    # No queue slot taken, nothing cancelled.
    assert await cpu_load(worker) == load
    assert worker.running.inference.active_jobs == 2
    full = seen + await collect(call)
    assert kinds(full)[-1] == "result"
    assert sequences(full) == list(range(1, len(full) + 1))
    assert kinds(full).count("progress") == LONG["steps"]
    [file] = full[-1].result.files
    assert file.path == "dup-running/image-0.png"
    assert sorted(p.name for p in (worker.outputs / "dup-running").iterdir()) == ["image-0.png"]
    assert (worker.outputs / file.path).stat().st_size == file.size_bytes
    assert await collect(attach(worker, "dup-running")) == full
    queued_full = queued_seen + await collect(queued)
    assert kinds(queued_full) == ["accepted", "queued", "started", "result"]
    assert len(queued_full[-1].result.embeddings) == 1
    assert worker.running.metrics.refused_calls.labels("ALREADY_EXISTS")._value.get() == refused + 2


async def test_an_ended_job_id_is_refused_and_its_events_are_untouched(worker: EngineWorker) -> None:
    full = await collect(worker.stub.Infer(embed("dup-ended", ["hello"]), timeout=120))
    assert kinds(full)[-1] == "result"
    # An embedding leaves no output folder: the kept job alone refuses the id.
    assert not (worker.outputs / "dup-ended").exists()
    await expect_status(
        lambda: worker.stub.Infer(embed("dup-ended", ["other"]), timeout=30),
        grpc.StatusCode.ALREADY_EXISTS,
        in_use("dup-ended", "ended"),
    )
    assert await collect(attach(worker, "dup-ended")) == full
    response = await worker.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="dup-ended"), timeout=10)
    assert not response.cancelled


async def test_a_job_id_with_outputs_is_refused_before_anything_runs(worker: EngineWorker) -> None:
    folder = worker.outputs / "dup-outputs"
    folder.mkdir()
    (folder / "image-0.png").write_bytes(b"an earlier run's output")
    before = (folder / "image-0.png").stat()
    load = await cpu_load(worker)
    await expect_status(
        lambda: worker.stub.Infer(t2i("dup-outputs", steps=2), timeout=30),
        grpc.StatusCode.ALREADY_EXISTS,
        in_use("dup-outputs", "has outputs"),
    )
    assert [p.name for p in folder.iterdir()] == ["image-0.png"]
    assert (folder / "image-0.png").read_bytes() == b"an earlier run's output"
    assert (folder / "image-0.png").stat().st_mtime_ns == before.st_mtime_ns
    assert await cpu_load(worker) == load
    # Refused, never accepted: nothing to attach to, and the id stays free of a journal.
    await expect_status(lambda: attach(worker, "dup-outputs"), grpc.StatusCode.NOT_FOUND, "dup-outputs")
    await expect_status(
        lambda: worker.stub.Infer(embed("dup-outputs", ["hello"]), timeout=30),
        grpc.StatusCode.ALREADY_EXISTS,
        in_use("dup-outputs", "has outputs"),
    )


async def test_an_empty_output_folder_does_not_hold_its_id(worker: EngineWorker) -> None:
    folder = worker.outputs / "empty-folder"
    folder.mkdir()
    full = await collect(worker.stub.Infer(t2i("empty-folder", steps=2), timeout=120))
    assert kinds(full)[-1] == "result"
    assert [p.name for p in folder.iterdir()] == ["image-0.png"]


async def test_two_calls_with_one_id_at_once_start_one_job(worker: EngineWorker) -> None:
    async def outcome(call) -> str:  # noqa: ANN001 - a grpc.aio stream call
        try:
            return kinds(await collect(call))[-1]
        except grpc.aio.AioRpcError as error:
            # Running, or already ended if the first was that quick: either way, held.
            assert error.details() in (in_use("dup-race", "running"), in_use("dup-race", "ended")), error.details()
            return error.code().name

    calls = [worker.stub.Infer(t2i("dup-race", steps=2), timeout=120) for _ in range(2)]
    assert sorted(await asyncio.gather(*(outcome(call) for call in calls))) == ["ALREADY_EXISTS", "result"]
    assert sorted(p.name for p in (worker.outputs / "dup-race").iterdir()) == ["image-0.png"]


async def test_a_new_id_still_runs_beside_refused_ones(worker: EngineWorker) -> None:
    await expect_status(
        lambda: worker.stub.Infer(embed("dup-ended", ["again"]), timeout=30), grpc.StatusCode.ALREADY_EXISTS, "(ended)"
    )
    full = await collect(worker.stub.Infer(t2i("fresh-id", steps=2), timeout=120))
    assert kinds(full) == ["accepted", "queued", "started", "progress", "progress", "result"]
    assert [f.path for f in full[-1].result.files] == ["fresh-id/image-0.png"]
    assert await collect(attach(worker, "fresh-id")) == full


async def test_attach_to_an_unknown_or_bad_id(worker: EngineWorker) -> None:
    await expect_status(lambda: attach(worker, "never-ran"), grpc.StatusCode.NOT_FOUND, "never-ran")
    await expect_status(lambda: attach(worker, "../escape"), grpc.StatusCode.INVALID_ARGUMENT, "job_id")


# ---------------------------------------------------------------- what is kept


async def test_ended_jobs_expire_after_the_retention(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = copy_models(demo_models(tmp_path_factory.getbasetemp()), tmp_path / "models", ["minilm"])
    engine = await start_engine(tmp_path, models, job_retention_seconds=0.5)
    try:
        full = await collect(engine.stub.Infer(embed("short-lived", ["hello"]), timeout=120))
        assert await collect(attach(engine, "short-lived")) == full
        await asyncio.sleep(0.8)
        await expect_status(lambda: attach(engine, "short-lived"), grpc.StatusCode.NOT_FOUND, "short-lived")
    finally:
        await stop_engine(engine)


async def test_max_retained_jobs_bounds_the_ended_jobs_kept(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = copy_models(demo_models(tmp_path_factory.getbasetemp()), tmp_path / "models", ["minilm", "tiny-sd"])
    engine = await start_engine(tmp_path, models, max_retained_jobs=2)
    try:
        # One device: jobs queued behind a running one end, withdrawn, while it runs.
        running = engine.stub.Infer(t2i("bound-running", **LONG), timeout=120)
        await read_until(running, "started")
        queued = [engine.stub.Infer(embed(f"bound-{index}", ["hello"]), timeout=120) for index in range(3)]
        for call in queued:
            assert kinds([await call.read(), await call.read()]) == ["accepted", "queued"]
        for index, call in enumerate(queued):
            await engine.stub.CancelJob(inference_pb2.CancelJobRequest(job_id=f"bound-{index}"), timeout=10)
            assert kinds(await collect(call)) == ["cancelled"]
        # The earliest ended goes first.
        await expect_status(lambda: attach(engine, "bound-0"), grpc.StatusCode.NOT_FOUND, "bound-0")
        for index in (1, 2):
            assert kinds(await collect(attach(engine, f"bound-{index}"))) == ["accepted", "queued", "cancelled"]
        # A running job is kept whatever the bound.
        follower = attach(engine, "bound-running")
        assert (await follower.read()).WhichOneof("event") == "accepted"
        await engine.stub.CancelJob(inference_pb2.CancelJobRequest(job_id="bound-running"), timeout=10)
        assert kinds(await collect(follower))[-1] == "cancelled"
        await collect(running)
    finally:
        await stop_engine(engine)


async def test_only_the_last_progress_events_are_kept(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = copy_models(demo_models(tmp_path_factory.getbasetemp()), tmp_path / "models", ["tiny-sd"])
    engine = await start_engine(tmp_path, models, max_retained_progress_events=3)
    try:
        full = await collect(engine.stub.Infer(t2i("capped", steps=8), timeout=120))
        # The live stream has every step; the replay the last three.
        progress = [event for event in full if event.WhichOneof("event") == "progress"]
        assert [event.progress.current for event in progress] == list(range(1, 9))
        expected = sorted(
            [event for event in full if event.WhichOneof("event") != "progress"] + progress[-3:], key=lambda e: e.sequence
        )
        replayed = await collect(attach(engine, "capped"))
        assert replayed == expected
        assert kinds(replayed) == ["accepted", "queued", "started", "progress", "progress", "progress", "result"]
        assert [event.progress.current for event in replayed if event.WhichOneof("event") == "progress"] == [6, 7, 8]
    finally:
        await stop_engine(engine)
