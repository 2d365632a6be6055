"""GPU check of the worker engine: every task on a CUDA device, through a real
worker over gRPC, with results checked and per-task timings and device memory
printed. Finishes in well under 5 minutes on one GPU.

    python-workers/.venv/bin/python python-workers/bench/gpu_check.py [--json FILE]
    python-workers/.venv/bin/python python-workers/bench/gpu_check.py --allow-cpu   # dry run without a GPU

Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import torch
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from device_ops.v1 import inference_pb2, memory_pb2, models_pb2, worker_service_pb2_grpc  # noqa: E402
from device_ops_worker.server import start_server  # noqa: E402
from device_ops_worker.settings import parse_settings  # noqa: E402
from device_ops_worker_tools.demo_models import prepare_demo_models  # noqa: E402


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


class Checks:
    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def record(self, name: str, ok: bool, seconds: float, detail: str = "") -> None:
        self.rows.append({"check": name, "ok": ok, "seconds": round(seconds, 4), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'}  {name:<44} {seconds * 1000:9.1f} ms  {detail}", flush=True)

    @property
    def ok(self) -> bool:
        return all(row["ok"] for row in self.rows)


async def run(stub, request):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    last = None
    async for event in stub.Infer(request, timeout=300):
        last = event
    return last, time.perf_counter() - started


async def check_all(device_kind: str, json_path: Path | None) -> int:
    checks = Checks()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        started = time.perf_counter()
        prepare_demo_models(tmp / "models")
        checks.record("prepare demo models", True, time.perf_counter() - started)
        settings = parse_settings([], {
            "WORKER_ID": "gpu-check", "WORKER_PORT": "0", "LOG_LEVEL": "warn", "SHUTDOWN_GRACE_SECONDS": "1",
            "MODEL_DIRECTORY": str(tmp / "models"), "OUTPUT_DIRECTORY": str(tmp / "outputs"),
            "CACHE_DIRECTORY": str(tmp / "cache"), "MAX_LOADED_MODELS": "8", "MAX_QUEUE_PER_DEVICE": "512",
            "MAX_BATCH_SIZE": "256", "METRICS_PORT": "-1",
        })
        running = await start_server(settings)
        device = next(d for d in running.devices if d.torch_device.type == device_kind)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        try:
            dtype = "float16" if device_kind == "cuda" else "float32"
            for model in ("tiny-sd", "minilm", "tiny-mlp", "tiny-upscaler"):
                t0 = time.perf_counter()
                loaded = await stub.LoadModel(models_pb2.LoadModelRequest(model=model, device_id=device.id, dtype=dtype), timeout=120)
                checks.record(f"load {model} ({dtype})", loaded.placement.footprint_bytes > 0, time.perf_counter() - t0,
                              f"footprint {loaded.placement.footprint_bytes} bytes")

            def t2i(job: str, seed: int) -> inference_pb2.InferRequest:
                return inference_pb2.InferRequest(
                    job_id=job, model="tiny-sd", task=models_pb2.MODEL_TASK_TEXT_TO_IMAGE, device_id=device.id,
                    image_generation=inference_pb2.ImageGenerationInput(prompt="a lighthouse", steps=20, width=256, height=256, seed=seed),
                )

            first, seconds = await run(stub, t2i("t2i-a", 11))
            second, _ = await run(stub, t2i("t2i-b", 11))
            ok = first.WhichOneof("event") == "result" and first.result.files[0].width == 256
            same = ok and first.result.files[0].sha256 == second.result.files[0].sha256
            checks.record("text-to-image 256² × 20 steps", ok, seconds, f"{seconds / 20 * 1000:.2f} ms/step")
            checks.record("same seed → same image", same, 0)

            for task, name in ((models_pb2.MODEL_TASK_IMAGE_TO_IMAGE, "image-to-image"), (models_pb2.MODEL_TASK_INPAINTING, "inpainting")):
                generation = inference_pb2.ImageGenerationInput(prompt="a boat", steps=10, strength=0.8, seed=1, init_image=png(256, 256))
                if task == models_pb2.MODEL_TASK_INPAINTING:
                    generation.mask_image = png(256, 256)
                event, seconds = await run(stub, inference_pb2.InferRequest(
                    job_id=name, model="tiny-sd", task=task, device_id=device.id, image_generation=generation))
                checks.record(name, event.WhichOneof("event") == "result", seconds)

            texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
            event, seconds = await run(stub, inference_pb2.InferRequest(
                job_id="embed", model="minilm", task=models_pb2.MODEL_TASK_TEXT_EMBEDDING, device_id=device.id,
                text_embedding=inference_pb2.TextEmbeddingInput(texts=texts, normalize=True)))
            vectors = np.array([list(e.values) for e in event.result.embeddings])
            finite = bool(np.isfinite(vectors).all())
            near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
            checks.record("text-embedding semantics", finite and near > far + 0.3, seconds, f"cos {near:.3f} vs {far:.3f}")

            concurrency = 256
            t0 = time.perf_counter()
            results = await asyncio.gather(*(run(stub, inference_pb2.InferRequest(
                job_id=f"c{i}", model="minilm", task=models_pb2.MODEL_TASK_TEXT_EMBEDDING, device_id=device.id,
                text_embedding=inference_pb2.TextEmbeddingInput(texts=[f"sentence {i}"]))) for i in range(concurrency)))
            elapsed = time.perf_counter() - t0
            batches = sorted(r[0].result.batch_size for r in results)
            checks.record(f"{concurrency} concurrent embeddings", all(r[0].WhichOneof("event") == "result" for r in results),
                          elapsed, f"{concurrency / elapsed:.0f} req/s, median batch {batches[len(batches) // 2]}")

            x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
            request = inference_pb2.InferRequest(job_id="tensor", model="tiny-mlp", task=models_pb2.MODEL_TASK_TENSOR, device_id=device.id)
            request.tensor.inputs["x"].CopyFrom(inference_pb2.Tensor(dtype="float32", shape=[64, 4], data=x.tobytes()))
            event, seconds = await run(stub, request)
            y = event.result.tensors["y"]
            out = np.frombuffer(y.data, dtype=np.dtype(y.dtype)).reshape(tuple(y.shape))
            checks.record("tensor", out.shape == (64, 3) and bool(np.isfinite(out).all()), seconds, f"dtype {y.dtype}")

            event, seconds = await run(stub, inference_pb2.InferRequest(
                job_id="upscale", model="tiny-upscaler", task=models_pb2.MODEL_TASK_UPSCALE, device_id=device.id,
                postprocess=inference_pb2.PostprocessInput(image=png(128, 96))))
            checks.record("upscale (model)", event.result.files[0].width == 256, seconds)
            event, seconds = await run(stub, inference_pb2.InferRequest(
                job_id="enhance", task=models_pb2.MODEL_TASK_ENHANCE,
                postprocess=inference_pb2.PostprocessInput(source_output="upscale/upscale-0.png", adjustments={"sharpness": 1.5})))
            checks.record("enhance", event.WhichOneof("event") == "result", seconds)

            status = await stub.GetMemoryStatus(memory_pb2.GetMemoryStatusRequest(device_id=device.id), timeout=30)
            memory = status.devices[0]
            checks.record("memory status", True, 0,
                          f"allocated {memory.allocated_bytes} reserved {memory.reserved_bytes} used {memory.used_bytes} of {memory.total_bytes}")
            t0 = time.perf_counter()
            freed = 0
            for model in ("tiny-sd", "minilm", "tiny-mlp", "tiny-upscaler"):
                freed += (await stub.UnloadModel(models_pb2.UnloadModelRequest(model=model), timeout=60)).freed_bytes
            cleared = await stub.ClearMemory(memory_pb2.ClearMemoryRequest(device_id=device.id), timeout=60)
            after = (await stub.GetMemoryStatus(memory_pb2.GetMemoryStatusRequest(device_id=device.id), timeout=30)).devices[0]
            checks.record("unload all + clear", freed > 0, time.perf_counter() - t0,
                          f"unloaded {freed} bytes, cache freed {cleared.freed_bytes}, allocated after {after.allocated_bytes}")
        finally:
            await channel.close()
            await running.stop(0)
    if json_path:
        json_path.write_text(json.dumps({"device": device_kind, "checks": checks.rows}, indent=2))
    print("ALL CHECKS PASSED" if checks.ok else "SOME CHECKS FAILED")
    return 0 if checks.ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no GPU (dry run)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if torch.cuda.is_available():
        kind = "cuda"
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    elif args.allow_cpu:
        kind = "cpu"
        print("no CUDA device: dry run on the CPU")
    else:
        print("no CUDA device here; run on a GPU machine (or --allow-cpu for a dry run)", file=sys.stderr)
        return 2
    return asyncio.run(check_all(kind, args.json))


if __name__ == "__main__":
    sys.exit(main())
