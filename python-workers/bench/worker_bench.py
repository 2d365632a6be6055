"""Worker engine benchmark: figures measured side by side in one run.

    python-workers/.venv/bin/python python-workers/bench/worker_bench.py [--device cpu|cuda] [--json FILE]

1. Dynamic batching — 256 concurrent single-text embedding requests (MiniLM)
   through a real worker process over gRPC, with batching on
   (MAX_BATCH_SIZE=256) and off (MAX_BATCH_SIZE=1): throughput of each and
   the ratio. Target ≥ 10× (set for GPUs, where batch 1 is launch-bound).
   Every request's row is checked against the unbatched answer for the same
   text.
2. Diffusion step time — the same pipeline, device, dtype, size and steps,
   run (a) as a bare diffusers call in a process of its own and (b) through a
   worker process's Infer stream; seconds per denoising step from the step
   callbacks (a) and the progress events (b). Target: (b) within 5 % of (a).
   Each side runs in a fresh process because CPU torch keeps one OpenMP
   thread team per calling thread: running both in one process measures two
   teams fighting over the cores, not the worker.

Demo models are built into a temporary folder first (offline). The load
generator runs in this process; on a 2-core machine it shares the cores with
the worker, which the figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_ops.v1 import inference_pb2, models_pb2, worker_service_pb2_grpc  # noqa: E402
from device_ops_worker_tools.demo_models import prepare_demo_models  # noqa: E402

CONCURRENCY = 256


class WorkerProcess:
    """A real worker process, started as the gateway starts one."""

    def __init__(self, tmp: Path, models: Path, **settings: object) -> None:
        read_end, write_end = os.pipe()
        flags = {
            "port": 0, "ready-fd": write_end, "metrics-port": -1, "log-level": "warn",
            "model-directory": models, "output-directory": tmp / "outputs", "cache-directory": tmp / "cache",
            "max-queue-per-device": 4096, "max-batch-size": CONCURRENCY, "max-batch-delay-ms": 2,
            **{key.replace("_", "-"): value for key, value in settings.items()},
        }
        args = [sys.executable, "-m", "device_ops_worker"]
        for key, value in flags.items():
            args += [f"--{key}", str(value)]
        self.process = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(SRC), os.environ.get("PYTHONPATH"))))}, pass_fds=(write_end,))
        os.close(write_end)
        with os.fdopen(read_end) as ready:
            self.address = f"127.0.0.1:{json.loads(ready.readline())['port']}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


async def final_event(stub: worker_service_pb2_grpc.WorkerServiceStub, request: inference_pb2.InferRequest):
    last = None
    async for event in stub.Infer(request, timeout=600):
        last = event
    assert last is not None and last.WhichOneof("event") == "result", last
    return last.result


def embed_request(job_id: str, text: str, device_id: str) -> inference_pb2.InferRequest:
    return inference_pb2.InferRequest(
        job_id=job_id,
        model="minilm",
        task=models_pb2.MODEL_TASK_TEXT_EMBEDDING,
        device_id=device_id,
        text_embedding=inference_pb2.TextEmbeddingInput(texts=[text]),
    )


async def device_id_of(stub: worker_service_pb2_grpc.WorkerServiceStub, kind: str) -> str:
    from device_ops.v1 import devices_pb2

    devices = await stub.ListDevices(devices_pb2.ListDevicesRequest(), timeout=60)
    wanted = devices_pb2.DEVICE_KIND_CUDA if kind == "cuda" else devices_pb2.DEVICE_KIND_CPU
    return next(d.id for d in devices.devices if d.kind == wanted)


async def embedding_round(tmp: Path, models: Path, device: str, batch: int, texts: list[str], rounds: int):
    worker = WorkerProcess(tmp / f"b{batch}", models, max_batch_size=batch)
    channel = grpc.aio.insecure_channel(worker.address)
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    device_id = await device_id_of(stub, device)
    try:
        await final_event(stub, embed_request("warm", texts[0], device_id))
        rates, batch_sizes, rows = [], [], {}
        for r in range(rounds):
            started = time.perf_counter()
            results = await asyncio.gather(
                *(final_event(stub, embed_request(f"r{r}-{i}", t, device_id)) for i, t in enumerate(texts))
            )
            rates.append(len(texts) / (time.perf_counter() - started))
            batch_sizes += [res.batch_size for res in results]
            rows = {t: np.array(res.embeddings[0].values) for t, res in zip(texts, results, strict=True)}
        return statistics.median(rates), statistics.median(batch_sizes), rows
    finally:
        await channel.close()
        worker.stop()


def bare_steps_in_own_process(model_path: Path, device: str, steps: int, side: int) -> list[float]:
    code = (
        "import json, sys, torch; sys.path.insert(0, sys.argv[1]); from worker_bench import bare_steps; "
        "dtype = torch.float32 if sys.argv[3] == 'cpu' else torch.float16; "
        "print(json.dumps(bare_steps(sys.argv[2], torch.device(sys.argv[3]), dtype, int(sys.argv[4]), int(sys.argv[5]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(model_path), device, str(steps), str(side)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(SRC), os.environ.get("PYTHONPATH"))))}, capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def bare_steps(model_path: Path, device: torch.device, dtype: torch.dtype, steps: int, side: int) -> list[float]:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(
        str(model_path), torch_dtype=dtype, local_files_only=True, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    stamps: list[float] = []

    def on_step(_pipe, _i, _t, kwargs):  # noqa: ANN001, ANN202
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        return kwargs

    per_step = []
    with torch.inference_mode():
        pipe(prompt="warm up", num_inference_steps=2, width=side, height=side)
        for seed in range(3):
            stamps.clear()
            pipe(
                prompt="a lighthouse at dusk",
                num_inference_steps=steps,
                width=side,
                height=side,
                generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=on_step,
            )
            per_step.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
    return per_step


async def served_steps(tmp: Path, models: Path, device: str, steps: int, side: int) -> list[float]:
    worker = WorkerProcess(tmp / "sd", models)
    channel = grpc.aio.insecure_channel(worker.address)
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    device_id = await device_id_of(stub, device)

    def request(job: str, n: int, seed: int) -> inference_pb2.InferRequest:
        return inference_pb2.InferRequest(
            job_id=job,
            model="tiny-sd",
            task=models_pb2.MODEL_TASK_TEXT_TO_IMAGE,
            device_id=device_id,
            dtype="float32" if device == "cpu" else "float16",
            image_generation=inference_pb2.ImageGenerationInput(
                prompt="a lighthouse at dusk", steps=n, width=side, height=side, seed=seed
            ),
        )

    try:
        await final_event(stub, request("warm", 2, 0))
        per_step = []
        for seed in range(3):
            stamps = []
            async for event in stub.Infer(request(f"sd-{seed}", steps, seed), timeout=600):
                if event.WhichOneof("event") == "progress":
                    stamps.append((event.progress.current, time.perf_counter()))
            # Progress is throttled (PROGRESS_INTERVAL_MS): time between the
            # first and last step's events over the steps between them.
            (first_step, first_at), (last_step, last_at) = stamps[0], stamps[-1]
            per_step.append((last_at - first_at) / (last_step - first_step))
        return per_step
    finally:
        await channel.close()
        worker.stop()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        models = tmp / "models"
        prepare_demo_models(models)
        texts = [f"request {i}: {'a cat sleeps on the sofa' if i % 2 else 'markets rallied after the report'} #{i}" for i in range(CONCURRENCY)]

        unbatched_rate, _, reference = await embedding_round(tmp, models, args.device, 1, texts, rounds=1)
        batched_rate, median_batch, rows = await embedding_round(tmp, models, args.device, CONCURRENCY, texts, rounds=3)
        worst = max(float(np.max(np.abs(rows[t] - reference[t]))) for t in texts)

        # Alternate the two sides so drift of the machine hits both.
        bare, served = [], []
        for _ in range(2):
            bare += bare_steps_in_own_process(models / "tiny-sd", args.device, args.steps, args.side)
            served += await served_steps(tmp, models, args.device, args.steps, args.side)

    ratio = batched_rate / unbatched_rate
    bare_s, served_s = statistics.median(bare), statistics.median(served)
    overhead = served_s / bare_s - 1
    figures = {
        "machine": {"device": args.device, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "embedding": {
            "concurrency": CONCURRENCY,
            "unbatched_requests_per_s": round(unbatched_rate, 1),
            "batched_requests_per_s": round(batched_rate, 1),
            "ratio": round(ratio, 2),
            "median_batch_size": median_batch,
            "max_row_difference_vs_unbatched": worst,
            "target_ratio": 10,
            "pass": ratio >= 10,
        },
        "diffusion": {
            "model": "tiny-sd",
            "steps": args.steps,
            "side": args.side,
            "bare_seconds_per_step": round(bare_s, 5),
            "served_seconds_per_step": round(served_s, 5),
            "overhead": round(overhead, 4),
            "target_overhead": 0.05,
            "pass": overhead <= 0.05,
        },
    }
    e, d = figures["embedding"], figures["diffusion"]
    print(f"device {args.device}, torch {torch.__version__}")
    print(f"{'figure':<52}{'value':>14}  target   result")
    print(f"{'embeddings/s, 256 concurrent, unbatched':<52}{e['unbatched_requests_per_s']:>14}")
    print(f"{'embeddings/s, 256 concurrent, dynamic batching':<52}{e['batched_requests_per_s']:>14}")
    print(f"{'batching speed-up':<52}{e['ratio']:>13}×  ≥ 10×    {'PASS' if e['pass'] else 'FAIL'}")
    print(f"{'median batch size':<52}{e['median_batch_size']:>14}")
    print(f"{'largest row difference vs unbatched':<52}{worst:>14.2e}")
    print(f"{'diffusion s/step, bare diffusers':<52}{d['bare_seconds_per_step']:>14}")
    print(f"{'diffusion s/step, through the worker':<52}{d['served_seconds_per_step']:>14}")
    print(f"{'worker overhead per step':<52}{overhead * 100:>13.2f}%  ≤ 5 %    {'PASS' if d['pass'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
