"""GPU benchmark of the worker: bare PyTorch against the same model served
through a real worker's Infer, side by side in one run (under 5 minutes on
one H100/H200).

    python-workers/.venv/bin/python python-workers/bench/gpu_bench.py [--json FILE]
    python-workers/.venv/bin/python python-workers/bench/gpu_bench.py --allow-cpu --quick   # dry run without a GPU

Sections, each figure a ratio of two measurements taken in this run:

1. Embedding throughput. A MiniLM-L6-sized BERT encoder (6 layers, hidden
   384, 12 heads, intermediate 1536, vocab 30522; random weights, synthetic
   WordPiece vocabulary) on texts of exactly SEQ_LEN tokens. Bare: the model
   loaded from the same folder in the same dtype, one forward pass + mean
   pooling + copy to the host per batch, on pre-tokenized inputs ("bare +
   tokenize" adds the tokenizer call, for attribution). Served: one Infer
   request of N texts at a time per lane, 1 and 2 lanes, through a worker
   with MAX_BATCH_SIZE=1 so that every forward pass has exactly the
   request's N texts (no merging, no batching delay). Target: served
   (2 lanes) >= 70 % of bare at every batch size.
2. Dynamic batching. CONCURRENCY single-text requests at once, through a
   worker with the default MAX_BATCH_SIZE / MAX_BATCH_DELAY_MS (on) and one
   with MAX_BATCH_SIZE=1 (off: the worker's documented way to disable
   batching). Target: on >= 10x off.
3. Diffusion step time. A Stable Diffusion 1.5-sized pipeline (CLIP-L text
   encoder, SD VAE, SD 1.5 UNet; random weights) at 512x512, text-to-image
   with guidance 7.5 (so the UNet runs on a batch of 2, as in SD 1.5), same
   dtype, seed and scheduler, bare and served calls interleaved; per round,
   seconds per step = (T(hi steps) - T(lo steps)) /
   (hi - lo) of whole calls, so text encoding, VAE decode and PNG writing
   cancel out and no step needs a device sync. Bare: a diffusers call on the
   same folder in this process; served: an Infer request. Target: served
   within 5 % of bare. SKIPPED when diffusers is not installed.
4. Device memory through GetMemoryStatus (allocator and NVML) before load,
   after loading both models and after unloading them.

The worker runs in this process (start_server); the requests come from a
load-generator subprocess of this script, as the gateway's requests come from
another process, so the client's own Python work does not take the worker's
GIL. Bare runs happen between the worker's jobs on the worker's own device
thread (DeviceQueue.run_now), so both sides use the same thread (on the CPU,
the same OpenMP thread team) and never overlap. With --allow-cpu on a machine
without CUDA everything runs on the CPU, with tiny diffusion dimensions
(--quick also shrinks the batch list, sequence length and concurrency).

Exit status: 0 when every section ran (a target that fails is a finding and
is printed as FAIL), 1 when a section failed with an error, 2 without CUDA
and without --allow-cpu.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import importlib.util
import inspect
import itertools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

SCRIPT = Path(__file__).resolve()
SRC = SCRIPT.parents[1] / "src"
sys.path.insert(0, str(SRC))

from device_ops.v1 import (
    inference_pb2,
    memory_pb2,
    models_pb2,
    worker_service_pb2_grpc,
)

# torch, transformers, diffusers and the worker are imported where they are
# used: the load-generator subprocess needs none of them.

ENCODER = "bench-minilm"
DIFFUSION = "bench-sd15"
EMBED_TARGET = 0.70
BATCHING_TARGET = 10.0
DIFFUSION_TARGET = 0.05
MIB = 1024 * 1024
_MARK = "@@bench "  # prefixes the load generator's replies on its stdout
_RPC_TIMEOUT = 300.0

# MiniLM-L6 (all-MiniLM-L6-v2) dimensions.
ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}
_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# One thin layer, same vocabulary: its forward pass costs little, so served
# minus bare latency is what one Infer costs beyond the model.
TINY_ENCODER = "bench-tiny-encoder"
TINY_ENCODER_CONFIG: dict[str, Any] = {**ENCODER_CONFIG, "hidden_size": 32, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "intermediate_size": 64}

# Stable Diffusion 1.5 dimensions.
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_VAE: dict[str, Any] = {
    "sample_size": 512,
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}
# CLIP ViT-L/14's text tower, as in SD 1.5 (vocabulary size included; the
# tokenizer is the project's small offline one, whose ids all fit).
SD15_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
# SD 1.5's scheduler (PNDM, one UNet evaluation per step with skip_prk_steps).
SD15_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
PROMPT = "a lighthouse on a cliff at sunset, dramatic sky"
GUIDANCE = 7.5


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes and time bounds of one run."""

    batches: tuple[int, ...]
    seq_len: int
    concurrency: int
    point_seconds: float  # per measurement of one side at one batch size
    batching_rounds: int
    batching_seconds: float
    sd_full: bool  # SD 1.5 dimensions, else the demo's tiny ones
    side: int
    steps: tuple[int, int]
    diffusion_rounds: int
    budget_seconds: float


def profile_for(quick: bool, cuda: bool, budget: float) -> Profile:
    if quick:
        return Profile(
            batches=(1, 8, 32), seq_len=32 if not cuda else 128, concurrency=32, point_seconds=0.4,
            batching_rounds=2, batching_seconds=8, sd_full=cuda, side=512 if cuda else 64,
            steps=(2, 8) if not cuda else (4, 12), diffusion_rounds=3, budget_seconds=budget,
        )
    return Profile(
        batches=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), seq_len=128, concurrency=256,
        point_seconds=0.8 if cuda else 1.5, batching_rounds=7 if cuda else 3, batching_seconds=25, sd_full=cuda,
        side=512 if cuda else 64, steps=(10, 40) if cuda else (2, 6), diffusion_rounds=8 if cuda else 3,
        budget_seconds=budget,
    )


# ---------------------------------------------------------------- texts


def vocabulary() -> list[str]:
    """The synthetic WordPiece vocabulary: specials, then one whole word per id."""
    return [*_SPECIAL_TOKENS, *(f"tok{i}" for i in range(ENCODER_CONFIG["vocab_size"] - len(_SPECIAL_TOKENS)))]


def make_texts(count: int, words: int, seed: int) -> list[str]:
    """`count` distinct texts of `words` in-vocabulary words: each tokenizes to
    exactly words + 2 tokens ([CLS] ... [SEP])."""
    rng = random.Random(seed)
    top = ENCODER_CONFIG["vocab_size"] - len(_SPECIAL_TOKENS)
    return [" ".join(f"tok{rng.randrange(top)}" for _ in range(words)) for _ in range(count)]


# ---------------------------------------------------------------- requests (both processes)


def embed_request(job_id: str, device_id: str, dtype: str, texts: list[str], model: str = ENCODER) -> inference_pb2.InferRequest:
    return inference_pb2.InferRequest(
        job_id=job_id,
        model=model,
        task=models_pb2.MODEL_TASK_TEXT_EMBEDDING,
        device_id=device_id,
        dtype=dtype,
        text_embedding=inference_pb2.TextEmbeddingInput(texts=texts),
    )


def image_request(job_id: str, device_id: str, dtype: str, steps: int, side: int, seed: int) -> inference_pb2.InferRequest:
    return inference_pb2.InferRequest(
        job_id=job_id,
        model=DIFFUSION,
        task=models_pb2.MODEL_TASK_TEXT_TO_IMAGE,
        device_id=device_id,
        dtype=dtype,
        image_generation=inference_pb2.ImageGenerationInput(
            prompt=PROMPT, steps=steps, width=side, height=side, seed=seed, guidance_scale=GUIDANCE
        ),
    )


# A worker refuses a job id it still keeps (ALREADY_EXISTS), and the load
# generators resend the same prepared requests: each send gets a fresh id,
# "<name>.<process tag><n>", the name kept for the worker's log.
_SEND_TAG = uuid.uuid4().hex[:8]
_SENDS = itertools.count()


async def final_result(
    stub: worker_service_pb2_grpc.WorkerServiceStub, request: inference_pb2.InferRequest, progress: list[int] | None = None
) -> inference_pb2.InferResult:
    request.job_id = f"{request.job_id.partition('.')[0]}.{_SEND_TAG}{next(_SENDS)}"
    last = None
    async for event in stub.Infer(request, timeout=_RPC_TIMEOUT):
        last = event
        if progress is not None and event.WhichOneof("event") == "progress":
            progress[0] += 1
    if last is None:
        raise RuntimeError(f"job {request.job_id} ended without an event")
    kind = last.WhichOneof("event")
    if kind != "result":
        detail = f"{last.error.code}: {last.error.message}" if kind == "error" else kind
        raise RuntimeError(f"job {request.job_id} ended with {detail}")
    return last.result


# ---------------------------------------------------------------- load generator (subprocess)


async def _op_embed_rate(stub: Any, c: dict[str, Any]) -> dict[str, Any]:
    """Requests of `batch` texts from `lanes` lanes, each lane one request at a time."""
    batch, lanes = int(c["batch"]), int(c["lanes"])
    model = c.get("model", ENCODER)
    pools = [
        [embed_request(f"lane{lane}", c["device_id"], c["dtype"], make_texts(batch, c["words"], c["seed"] + 2 * lane + k), model)
         for k in range(2)]
        for lane in range(lanes)
    ]
    await asyncio.gather(*(final_result(stub, pools[lane][0]) for lane in range(lanes)))  # warm-up
    latencies: list[float] = []
    deadline = time.perf_counter() + float(c["seconds"])

    async def run_lane(lane: int) -> None:
        for index in range(int(c["max_requests"])):
            started = time.perf_counter()
            result = await final_result(stub, pools[lane][index % 2])
            latencies.append(time.perf_counter() - started)
            if len(result.embeddings) != batch:
                raise RuntimeError(f"{len(result.embeddings)} embeddings for {batch} texts")
            if time.perf_counter() >= deadline:
                return

    started = time.perf_counter()
    await asyncio.gather(*(run_lane(lane) for lane in range(lanes)))
    elapsed = time.perf_counter() - started
    return {
        "texts_per_s": len(latencies) * batch / elapsed,
        "requests": len(latencies),
        "latency_ms_median": statistics.median(latencies) * 1000,
    }


async def _op_concurrent_prepare(stub: Any, c: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Build this process's share of the single-text requests (texts[first:first + count])."""
    first, count = int(c["first"]), int(c["count"])
    texts = make_texts(first + count, c["words"], c["seed"])[first:]
    state["requests"] = [embed_request(f"c{first + i}", c["device_id"], c["dtype"], [texts[i]]) for i in range(count)]
    return {"prepared": count}


async def _op_concurrent_round(stub: Any, c: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Send every prepared request at once; the parent times the round across processes."""
    results = await asyncio.gather(*(final_result(stub, r) for r in state["requests"]))
    return {"batch_sizes": [result.batch_size for result in results]}


async def _op_diffuse(stub: Any, c: dict[str, Any]) -> dict[str, Any]:
    request = image_request(c["job_id"], c["device_id"], c["dtype"], int(c["steps"]), int(c["side"]), int(c["seed"]))
    progress = [0]
    started = time.perf_counter()
    result = await final_result(stub, request, progress)
    return {"seconds": time.perf_counter() - started, "progress_events": progress[0], "files": len(result.files)}


async def _op_unary_rtt(stub: Any, c: dict[str, Any]) -> dict[str, Any]:
    """Median round trip of the cheapest unary rpc (GetWorkerInfo): the gRPC floor of this machine."""
    from device_ops.v1 import worker_info_pb2

    request = worker_info_pb2.GetWorkerInfoRequest()
    for _ in range(20):
        await stub.GetWorkerInfo(request, timeout=30)
    times = []
    for _ in range(int(c["count"])):
        started = time.perf_counter()
        await stub.GetWorkerInfo(request, timeout=30)
        times.append(time.perf_counter() - started)
    return {"median_ms": statistics.median(times) * 1000}


_OPS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "unary_rtt": _op_unary_rtt,
    "embed_rate": _op_embed_rate,
    "concurrent_prepare": _op_concurrent_prepare,
    "concurrent_round": _op_concurrent_round,
    "diffuse": _op_diffuse,
}
_STATEFUL = frozenset({"concurrent_prepare", "concurrent_round"})


async def load_client_main() -> int:
    """The subprocess: one JSON command per stdin line, one marked JSON reply per stdout line."""
    channels: dict[str, grpc.aio.Channel] = {}
    state: dict[str, Any] = {}
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return 0
            command = json.loads(line)
            if command["op"] == "quit":
                return 0
            try:
                # A command without an address goes to the worker of the previous one.
                address = command.get("address") or state["address"]
                if address not in channels:
                    channels[address] = grpc.aio.insecure_channel(
                        address, options=[("grpc.max_receive_message_length", 64 * MIB)]
                    )
                state["address"] = address
                stub = worker_service_pb2_grpc.WorkerServiceStub(channels[address])
                op = _OPS[command["op"]]
                reply = await (op(stub, command, state) if command["op"] in _STATEFUL else op(stub, command))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the section
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(_MARK + json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        for channel in channels.values():
            await channel.close()


class LoadProcess:
    """The parent's handle on one load-generator subprocess."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls) -> LoadProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), "--load-client",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(SRC), os.environ.get("PYTHONPATH"))))}, limit=16 * MIB,
        )
        return cls(process)

    async def call(self, timeout: float, **command: Any) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write((json.dumps(command) + "\n").encode())
        await self._process.stdin.drain()

        async def reply() -> dict[str, Any]:
            assert self._process.stdout is not None
            while True:
                line = (await self._process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the load generator exited")
                if line.startswith(_MARK):
                    return json.loads(line[len(_MARK):])

        answer = await asyncio.wait_for(reply(), timeout)
        if "error" in answer:
            raise RuntimeError(f"load generator, {command['op']}: {answer['error']}")
        return answer

    async def close(self) -> None:
        if self._process.returncode is None and self._process.stdin is not None:
            self._process.stdin.write(b'{"op": "quit"}\n')
            try:
                await self._process.stdin.drain()
                await asyncio.wait_for(self._process.wait(), 10)
            except (TimeoutError, ConnectionError):
                self._process.kill()
                await self._process.wait()


class LoadClient:
    """A few load-generator processes: one Python process cannot send and read
    hundreds of concurrent streams as fast as a GPU worker answers them."""

    def __init__(self, processes: list[LoadProcess]) -> None:
        self.processes = processes

    @classmethod
    async def start(cls, count: int) -> LoadClient:
        return cls([await LoadProcess.start() for _ in range(max(count, 1))])

    async def call(self, timeout: float, **command: Any) -> dict[str, Any]:
        """A command for one process."""
        return await self.processes[0].call(timeout, **command)

    async def concurrent(self, timeout: float, concurrency: int, rounds: int, seconds: float, **command: Any) -> dict[str, Any]:
        """`concurrency` single-text requests at once, split over the processes;
        one untimed warm-up round, then up to `rounds` timed ones within `seconds`."""
        count = len(self.processes)
        shares = [concurrency // count + (i < concurrency % count) for i in range(count)]
        starts = [sum(shares[:i]) for i in range(len(shares))]
        await asyncio.gather(*(
            process.call(timeout, op="concurrent_prepare", first=first, count=count, **command)
            for process, first, count in zip(self.processes, starts, shares, strict=True) if count
        ))
        active = [process for process, count in zip(self.processes, shares, strict=True) if count]

        async def one_round() -> tuple[float, list[int]]:
            started = time.perf_counter()
            replies = await asyncio.gather(*(process.call(timeout, op="concurrent_round") for process in active))
            return time.perf_counter() - started, [size for reply in replies for size in reply["batch_sizes"]]

        await one_round()  # warm-up
        deadline = time.perf_counter() + seconds
        rates: list[float] = []
        sizes: list[int] = []
        for _ in range(rounds):
            elapsed, batch_sizes = await one_round()
            rates.append(concurrency / elapsed)
            sizes += batch_sizes
            if time.perf_counter() >= deadline:
                break
        return {"requests_per_s": statistics.median(rates), "rates": rates, "median_batch": statistics.median(sizes),
                "max_batch": max(sizes), "load_processes": len(active)}

    async def close(self) -> None:
        await asyncio.gather(*(process.close() for process in self.processes))


# ---------------------------------------------------------------- report


class Report:
    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}
        self.targets: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []

    @staticmethod
    def section(title: str) -> None:
        print(f"\n== {title}", flush=True)

    def target(self, name: str, ok: bool, measured: str, wanted: str) -> None:
        self.targets.append({"target": name, "measured": measured, "wanted": wanted, "pass": ok})
        print(f"   {'PASS' if ok else 'FAIL'}  {name}: {measured} (target {wanted})", flush=True)

    def skip(self, section: str, reason: str) -> None:
        self.skipped.append({"section": section, "reason": reason})
        print(f"   SKIPPED  {section}: {reason}", flush=True)

    def error(self, section: str, exc: BaseException) -> None:
        self.errors.append({"section": section, "error": f"{type(exc).__name__}: {exc}"})
        print(f"   ERROR  {section}: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exception(exc, file=sys.stderr)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.started = time.perf_counter()
        self.end = self.started + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:,.1f} MiB"


# ---------------------------------------------------------------- device helpers


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def quiet_libraries() -> None:
    """Load reports and progress bars of transformers and diffusers would bury the figures."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    if importlib.util.find_spec("diffusers") is not None:
        try:
            from diffusers.utils import logging as diffusers_logging
        except ImportError:
            return
        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()


def header(device: Any, report: Report) -> None:
    import torch
    import transformers

    machine: dict[str, Any] = {
        "device": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "diffusers": _version("diffusers"),
        "grpcio": grpc.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "switch_interval_s": sys.getswitchinterval(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        machine.update(
            name=torch.cuda.get_device_name(device),
            capability=f"{properties.major}.{properties.minor}",
            cudnn=torch.backends.cudnn.version(),
            mem_get_info={"free_bytes": int(free), "total_bytes": int(total)},
        )
        from device_ops_worker.devices.nvml import Nvml

        nvml = Nvml()
        uuid = getattr(properties, "uuid", None)
        reading = nvml.memory(f"GPU-{uuid}") if uuid is not None else None
        details = nvml.read(f"GPU-{uuid}", None) if uuid is not None else None
        nvml.shutdown()
        machine["nvml"] = (
            None if reading is None
            else {"used_bytes": reading[0], "total_bytes": reading[1], "driver": details.driver_version if details else None}
        )
        print(f"GPU {machine['name']} (sm {machine['capability']}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"cuDNN {machine['cudnn']}")
        print(f"GPU memory (torch.cuda.mem_get_info): {mib(int(free))} free of {mib(int(total))}")
        if reading is not None:
            print(f"GPU memory (NVML): {mib(reading[0])} used of {mib(reading[1])}, driver {machine['nvml']['driver']}")
        else:
            print("GPU memory (NVML): NVML not available")
    else:
        print(f"no CUDA device: dry run on the CPU ({machine['cpu']}, {os.cpu_count()} cores), torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}; figures are not GPU figures")
    print(f"transformers {machine['transformers']}, diffusers {machine['diffusers'] or 'missing'}, grpcio {grpc.__version__}; "
          f"{machine['usable_cpus']} usable CPUs; GIL switch interval {machine['switch_interval_s'] * 1000:g} ms")
    report.figures["machine"] = machine


def _version(package: str) -> str | None:
    if importlib.util.find_spec(package) is None:
        return None
    try:
        return str(__import__(package).__version__)
    except Exception as exc:  # noqa: BLE001 - a broken install is reported as such
        return f"unusable ({type(exc).__name__}: {exc})"


# ---------------------------------------------------------------- models in the repository


def write_manifest(folder: Path, name: str, task: str, model_format: str, dtype: str) -> None:
    from device_ops_worker_tools.demo_models import MANIFEST_NAME, sha256_file

    files = {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = {"name": name, "task": task, "format": model_format, "dtype": dtype, "files": files}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def build_encoder(folder: Path, seq_len: int, config: dict[str, Any] | None = None) -> None:
    """A sentence-transformers-style folder: BERT weights, tokenizer, max_seq_length."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20240607)
        model = BertModel(BertConfig(**(config or ENCODER_CONFIG))).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    words = vocabulary()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    if "vocab" in inspect.signature(BertTokenizer.__init__).parameters:  # transformers 5
        tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(words)}, model_max_length=512)
    else:  # transformers 4: the fast class reads vocab.txt
        fast = importlib.import_module("transformers").BertTokenizerFast
        tokenizer = fast(vocab_file=str(folder / "vocab.txt"), model_max_length=512)
    tokenizer.save_pretrained(str(folder))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": seq_len}) + "\n", encoding="utf-8")
    write_manifest(folder, folder.name, "text-embedding", "transformers", "float32")


def build_diffusion(folder: Path, full: bool, device: Any, dtype: Any) -> str:
    """A diffusers StableDiffusionPipeline folder with random weights; returns its description."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from device_ops_worker_tools.demo_models import (
        TINY_TEXT_ENCODER_CONFIG,
        TINY_UNET_CONFIG,
        TINY_VAE_CONFIG,
        build_clip_tokenizer,
    )

    tokenizer = build_clip_tokenizer()
    unet_config, vae_config = (SD15_UNET, SD15_VAE) if full else (TINY_UNET_CONFIG, TINY_VAE_CONFIG)
    text_config = SD15_TEXT_ENCODER if full else {**TINY_TEXT_ENCODER_CONFIG, "vocab_size": len(tokenizer)}
    # Random initialisation is much faster on the GPU; weights are saved in the benchmark's dtype.
    unet: Any
    vae: Any
    text_encoder: Any
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(20240607)
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **text_config,
        ))
    pipeline: Any = StableDiffusionPipeline(
        vae=vae.to(dtype).eval(), text_encoder=text_encoder.to(dtype).eval(), tokenizer=tokenizer,
        unet=unet.to(dtype).eval(), scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None,
        feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(folder), safe_serialization=True)
    params = sum(p.numel() for m in (unet, vae, text_encoder) for p in m.parameters())
    unet_params = sum(p.numel() for p in unet.parameters())
    del pipeline, unet, vae, text_encoder
    release(device)
    write_manifest(folder, DIFFUSION, "text-to-image", "diffusers", str(dtype).removeprefix("torch."))
    size = "SD 1.5 dimensions" if full else "tiny demo dimensions"
    return f"{size}: {params / 1e6:,.0f} M parameters ({unet_params / 1e6:,.0f} M in the UNet)"


# ---------------------------------------------------------------- bare measurements


def timed_loop(step: Callable[[], Any], seconds: float, warmup: int = 2) -> tuple[int, float]:
    """Run `step` (which must end synchronised) for about `seconds`, at least once; (runs, elapsed)."""
    for _ in range(warmup):
        step()
    runs = 0
    started = time.perf_counter()
    while True:
        step()
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return runs, elapsed


class BareEncoder:
    """The encoder as plain transformers code, loaded the way the worker loads it."""

    def __init__(self, folder: Path, device: Any, dtype: Any) -> None:
        from transformers import AutoModel, AutoTokenizer

        from device_ops_worker.handlers.embedding import read_max_length, read_pooling

        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True).to(device).eval()
        self.max_length = read_max_length(folder, self.tokenizer, self.model.config)
        self.pooling = read_pooling(folder)

    def encode(self, texts: list[str]) -> Any:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return encoded.to(self.device)

    def forward(self, encoded: Any) -> Any:
        import torch

        from device_ops_worker.handlers.embedding import pool

        with torch.inference_mode():
            hidden = self.model(**encoded)[0]
            return pool(hidden.float(), encoded["attention_mask"], self.pooling).cpu()

    def measure(self, texts: list[str], seconds: float) -> tuple[tuple[int, float], tuple[int, float]]:
        """(runs, elapsed) of forward passes on pre-tokenized texts, then of tokenize + forward."""
        encoded = self.encode(texts)
        forward = timed_loop(lambda: self.forward(encoded), seconds)
        with_tokenizer = timed_loop(lambda: self.forward(self.encode(texts)), seconds / 2, warmup=1)
        return forward, with_tokenizer

    def close(self) -> None:
        self.model = None
        release(self.device)


# ---------------------------------------------------------------- the worker


def worker_settings(tmp: Path, concurrency: int, **overrides: Any) -> Any:
    """The worker's defaults (as parse_settings gives them) with bench paths and `overrides`."""
    from device_ops_worker.settings import LogLevel, parse_settings

    defaults = parse_settings([], {})
    return dataclasses.replace(
        defaults,
        worker_id="gpu-bench", host="127.0.0.1", port=0, ready_fd=None, log_level=LogLevel.WARN,
        shutdown_grace_seconds=1, parent_pid=None, metrics_port=-1, worker_token=None, tls=None,
        model_directory=tmp / "models", output_directory=tmp / "outputs", cache_directory=tmp / "cache",
        # The default queue (64) refuses the concurrency test's requests before any batching happens.
        max_queue_per_device=max(defaults.max_queue_per_device, 4 * concurrency),
        **overrides,
    )


class Worker:
    def __init__(self, running: Any, device_id: str, channel: grpc.aio.Channel, settings: Any) -> None:
        self.running = running
        self.device_id = device_id
        self.channel = channel
        self.stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self.settings = settings

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @classmethod
    async def start(cls, settings: Any, kind: str) -> Worker:
        from device_ops_worker.server import start_server

        running = await start_server(settings)
        device = next(d for d in running.devices if d.torch_device.type == kind)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=[("grpc.max_receive_message_length", 64 * MIB)])
        return cls(running, device.id, channel, settings)

    async def on_device_thread(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the worker's own device thread, between its jobs: bare
        runs use the same thread (and, on the CPU, the same OpenMP thread team)
        as served ones, and never overlap them."""
        return await self.running.devices.get(self.device_id).queue.run_now(fn)

    async def load(self, model: str, dtype: str) -> int:
        response = await self.stub.LoadModel(
            models_pb2.LoadModelRequest(model=model, device_id=self.device_id, dtype=dtype), timeout=_RPC_TIMEOUT
        )
        return int(response.placement.footprint_bytes)

    async def memory(self) -> dict[str, Any]:
        status = await self.stub.GetMemoryStatus(memory_pb2.GetMemoryStatusRequest(device_id=self.device_id), timeout=60)
        device = status.devices[0]

        def field(name: str) -> int | None:
            return int(getattr(device, name)) if device.HasField(name) else None

        return {
            "allocated_bytes": field("allocated_bytes"),
            "reserved_bytes": field("reserved_bytes"),
            "used_bytes": field("used_bytes"),
            "total_bytes": field("total_bytes"),
            "models": {m.model: int(m.footprint_bytes) for m in device.models},
        }

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(1)


# ---------------------------------------------------------------- sections


@dataclasses.dataclass
class Context:
    profile: Profile
    device: Any
    dtype: Any  # torch dtype
    dtype_name: str
    kind: str
    tmp: Path
    client: LoadClient
    deadline: Deadline
    report: Report
    profile_dir: Path | None = None


async def embedding_section(ctx: Context, worker: Worker, bare: BareEncoder) -> None:
    """Bare vs served throughput per batch size (worker without dynamic batching)."""
    profile = ctx.profile
    words = profile.seq_len - 2
    await worker.load(ENCODER, ctx.dtype_name)

    # Same model, same tokens: served rows must match bare rows (fp16 tolerance).
    check_texts = make_texts(8, words, seed=7)
    served = await final_result(worker.stub, embed_request("check", worker.device_id, ctx.dtype_name, check_texts))
    encoded = bare.encode(check_texts)
    if int(encoded["input_ids"].shape[1]) != profile.seq_len:
        raise RuntimeError(f"texts tokenize to {int(encoded['input_ids'].shape[1])} tokens, not {profile.seq_len}")
    reference = (await worker.on_device_thread(lambda: bare.forward(encoded))).numpy()
    difference = float(np.max(np.abs(np.array([list(e.values) for e in served.embeddings]) - reference)))
    print(f"   same model: served vs bare rows, max |difference| {difference:.2e} (8 texts of {profile.seq_len} tokens)")
    await overhead_probe(ctx, worker)

    print(f"   {'batch':>5} {'bare ms':>9} {'bare/s':>10} {'bare+tok/s':>11} {'tok/s':>10} {'served/s':>10} {'1 lane/s':>10} "
          f"{'1-lane ms':>9} {'served/bare':>11}")
    points = []
    for batch in profile.batches:
        # Keep time for the later sections (the diffusion one builds and loads a 2 GB pipeline on CUDA).
        if ctx.deadline.left() < 4 * profile.point_seconds + (120 if ctx.kind == "cuda" else 30):
            ctx.report.skip(f"embedding batch {batch}", "time budget of the run spent")
            continue
        texts = make_texts(batch, words, seed=1000 + batch)
        (runs, elapsed), (runs_tok, elapsed_tok) = await worker.on_device_thread(
            functools.partial(bare.measure, texts, profile.point_seconds)
        )
        bare_rate = runs * batch / elapsed
        # The worker's own tokenizer path (what a served request pays before its forward pass), on a pool thread.
        served_model = worker.running.manager.resident(ENCODER, worker.device_id, ctx.dtype)
        tok_runs, tok_elapsed = (
            await asyncio.to_thread(timed_loop, functools.partial(served_model.tokenize, texts), profile.point_seconds / 4, 1)
            if served_model is not None else (0, 1.0)
        )
        command = {"address": worker.address, "device_id": worker.device_id, "dtype": ctx.dtype_name, "batch": batch,
                   "words": words, "seed": 5000 + batch, "max_requests": 100_000}
        one = await ctx.client.call(60 + 4 * profile.point_seconds, op="embed_rate", lanes=1,
                                    seconds=profile.point_seconds / 2, **command)
        two = await ctx.client.call(60 + 4 * profile.point_seconds, op="embed_rate", lanes=2,
                                    seconds=profile.point_seconds, **command)
        ratio = two["texts_per_s"] / bare_rate
        point = {
            "batch": batch, "bare_ms_per_batch": elapsed / runs * 1000, "bare_texts_per_s": bare_rate,
            "bare_with_tokenize_texts_per_s": runs_tok * batch / elapsed_tok, "served_texts_per_s": two["texts_per_s"],
            "worker_tokenize_texts_per_s": tok_runs * batch / tok_elapsed,
            "served_1_lane_texts_per_s": one["texts_per_s"], "served_1_lane_latency_ms": one["latency_ms_median"],
            "ratio": ratio, "pass": ratio >= EMBED_TARGET,
        }
        points.append(point)
        print(f"   {batch:>5} {point['bare_ms_per_batch']:>9.2f} {bare_rate:>10.0f} "
              f"{point['bare_with_tokenize_texts_per_s']:>11.0f} {point['worker_tokenize_texts_per_s']:>10.0f} "
              f"{two['texts_per_s']:>10.0f} {one['texts_per_s']:>10.0f} "
              f"{one['latency_ms_median']:>9.2f} {ratio:>10.0%}  {'PASS' if point['pass'] else 'FAIL'}", flush=True)
    served_model = worker.running.manager.resident(ENCODER, worker.device_id, ctx.dtype)
    graphs = getattr(served_model, "graphs", None)
    graph_state = (
        "off (not CUDA, or EMBEDDING_CUDA_GRAPHS=false)" if graphs is None
        else f"failed, eager instead: {graphs.disabled_reason}" if graphs.disabled_reason
        else f"{len(graphs.captured)} captured (rows x tokens: {', '.join(f'{r}x{t}' for r, t in graphs.captured)})"
    )
    print(f"   served: CUDA graphs of small passes {graph_state}; tokenization on a pool thread for requests "
          f"of 4,096+ characters, else on the device thread")
    if points and points[0]["batch"] == 1:
        rtt = ctx.report.figures.get("overhead_probe", {}).get("unary_rtt_ms")
        print(f"   batch-1 served latency {points[0]['served_1_lane_latency_ms']:.2f} ms (1 lane); aim from the issue: "
              f"graph floor (≈0.30 ms on an H200) + gRPC hop{f' ({rtt:.2f} ms unary here)' if rtt else ''} + 1 ms")
    ctx.report.figures["embedding"] = {
        "cuda_graphs": graph_state,
        "model": "BERT, MiniLM-L6 dimensions (random weights)", "seq_len": profile.seq_len, "dtype": ctx.dtype_name,
        "served_worker": {"max_batch_size": worker.settings.max_batch_size, "lanes": 2},
        "served_vs_bare_max_abs_difference": difference, "points": points,
    }
    if points:
        worst = min(points, key=lambda p: p["ratio"])
        ctx.report.target(
            "served embedding throughput vs bare, every batch size", all(p["pass"] for p in points),
            f"worst {worst['ratio']:.0%} at batch {worst['batch']}", f">= {EMBED_TARGET:.0%}",
        )


async def overhead_probe(ctx: Context, worker: Worker) -> None:
    """What one request costs beyond its forward pass: the unary gRPC round
    trip, and served minus bare latency of one text through a one-layer
    encoder (bare: tokenize + forward on the device thread)."""
    words = ctx.profile.seq_len - 2
    rtt = await ctx.client.call(60, op="unary_rtt", address=worker.address, count=200)
    await worker.load(TINY_ENCODER, ctx.dtype_name)
    tiny = BareEncoder(ctx.tmp / "models" / TINY_ENCODER, ctx.device, ctx.dtype)
    try:
        texts = make_texts(1, words, seed=3)
        runs, elapsed = await worker.on_device_thread(
            lambda: timed_loop(lambda: tiny.forward(tiny.encode(texts)), 0.5)
        )
    finally:
        tiny.close()
    served = await ctx.client.call(60, op="embed_rate", address=worker.address, device_id=worker.device_id,
                                   dtype=ctx.dtype_name, batch=1, lanes=1, words=words, seed=11, seconds=1.0,
                                   max_requests=100_000, model=TINY_ENCODER)
    bare_ms = elapsed / runs * 1000
    served_model = worker.running.manager.resident(TINY_ENCODER, worker.device_id, ctx.dtype)
    graphs = getattr(served_model, "graphs", None)
    graphed = graphs is not None and bool(graphs.captured)
    await worker.stub.UnloadModel(models_pb2.UnloadModelRequest(model=TINY_ENCODER, device_id=worker.device_id), timeout=60)
    print(f"   per-request cost: unary GetWorkerInfo round trip {rtt['median_ms']:.2f} ms; one-layer encoder, one text: "
          f"bare {bare_ms:.2f} ms (eager), served {served['latency_ms_median']:.2f} ms"
          + (" (from a CUDA graph, so not comparable)" if graphed
             else f" → Infer adds {served['latency_ms_median'] - bare_ms:.2f} ms"))
    ctx.report.figures["overhead_probe"] = {"unary_rtt_ms": rtt["median_ms"], "tiny_bare_ms": bare_ms,
                                            "tiny_served_ms": served["latency_ms_median"]}


async def batching_round(ctx: Context, worker: Worker) -> dict[str, Any]:
    await worker.load(ENCODER, ctx.dtype_name)
    profile = ctx.profile
    seconds = min(profile.batching_seconds, max(ctx.deadline.left() / 4, 1))
    return await ctx.client.concurrent(
        120 + 4 * seconds, profile.concurrency, profile.batching_rounds, seconds,
        address=worker.address, device_id=worker.device_id, dtype=ctx.dtype_name, words=profile.seq_len - 2, seed=77,
    )


def batching_verdict(ctx: Context, off: dict[str, Any], on: dict[str, Any], off_settings: Any, on_settings: Any) -> None:
    ratio = on["requests_per_s"] / off["requests_per_s"]
    concurrency = ctx.profile.concurrency
    print(f"   batching off (MAX_BATCH_SIZE={off_settings.max_batch_size}): {off['requests_per_s']:,.0f} requests/s, "
          f"median batch {off['median_batch']}")
    delay = f"MAX_BATCH_DELAY_MS={on_settings.max_batch_delay_ms:g}"
    print(f"   batching on  (MAX_BATCH_SIZE={on_settings.max_batch_size}, {delay}): {on['requests_per_s']:,.0f} requests/s, "
          f"median batch {on['median_batch']}, largest {on['max_batch']}")
    print(f"   (requests from {on['load_processes']} load-generator processes; rounds/s "
          f"off {', '.join(f'{r:,.0f}' for r in off['rates'])}; on {', '.join(f'{r:,.0f}' for r in on['rates'])})")
    ctx.report.figures["batching"] = {
        "concurrency": concurrency, "texts_tokens": ctx.profile.seq_len, "off": off, "on": on, "ratio": ratio,
        "off_settings": {"max_batch_size": off_settings.max_batch_size},
        "on_settings": {"max_batch_size": on_settings.max_batch_size, "max_batch_delay_ms": on_settings.max_batch_delay_ms},
    }
    ctx.report.target(f"dynamic batching speed-up, {concurrency} concurrent single-text requests",
                      ratio >= BATCHING_TARGET, f"{ratio:.1f}x", f">= {BATCHING_TARGET:g}x")


async def eager_section(ctx: Context, off_settings: Any, on_settings: Any) -> None:
    """Batch-1 served throughput and the batching ratio with every pass eager,
    for comparison with the worker's defaults (graphs for small passes)."""
    words = ctx.profile.seq_len - 2
    figures: dict[str, Any] = {}
    for label, settings in (("off", off_settings), ("on", on_settings)):
        worker = await Worker.start(dataclasses.replace(settings, embedding_cuda_graphs=False), ctx.kind)
        try:
            await worker.load(ENCODER, ctx.dtype_name)
            if label == "off":
                command = {"address": worker.address, "device_id": worker.device_id, "dtype": ctx.dtype_name, "batch": 1,
                           "words": words, "seed": 5001, "max_requests": 100_000}
                one = await ctx.client.call(60, op="embed_rate", lanes=1, seconds=1.0, **command)
                two = await ctx.client.call(60, op="embed_rate", lanes=2, seconds=1.0, **command)
                figures["batch1"] = {"served_texts_per_s": two["texts_per_s"], "latency_ms_1_lane": one["latency_ms_median"]}
                print(f"   batch 1, eager: served {two['texts_per_s']:,.0f}/s (2 lanes), {one['latency_ms_median']:.2f} ms (1 lane)")
            figures[label] = await batching_round(ctx, worker)
            print(f"   batching {label}, eager: {figures[label]['requests_per_s']:,.0f} requests/s, "
                  f"median batch {figures[label]['median_batch']}")
        finally:
            await worker.stop()
    figures["ratio"] = figures["on"]["requests_per_s"] / figures["off"]["requests_per_s"]
    print(f"   dynamic batching speed-up with eager passes: {figures['ratio']:.1f}x "
          f"(the target is judged on the worker's defaults, section 4)")
    ctx.report.figures["eager"] = figures


class BareDiffusion:
    """The pipeline as plain diffusers code, called with the arguments the worker passes."""

    def __init__(self, folder: Path, device: Any, dtype: Any) -> None:
        from diffusers import DiffusionPipeline

        self.device = device
        self.pipeline = DiffusionPipeline.from_pretrained(
            str(folder), dtype=dtype, local_files_only=True, use_safetensors=True,
            safety_checker=None, requires_safety_checker=False,
        ).to(device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.scheduler = self.pipeline.scheduler

    def seconds(self, steps: int, side: int, seed: int) -> float:
        import torch

        self.pipeline.scheduler = type(self.scheduler).from_config(self.scheduler.config)
        generator = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu").manual_seed(seed)
        synchronize(self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            images = self.pipeline(
                prompt=PROMPT, negative_prompt=None, num_inference_steps=steps, guidance_scale=GUIDANCE,
                num_images_per_prompt=1, generator=generator, output_type="pil", width=side, height=side,
            ).images
        synchronize(self.device)
        assert len(images) == 1
        return time.perf_counter() - started

    def close(self) -> None:
        self.pipeline = None
        self.scheduler = None
        release(self.device)


async def diffusion_section(ctx: Context, worker: Worker, description: str) -> None:
    profile = ctx.profile
    lo, hi = profile.steps
    side = profile.side
    print(f"   pipeline: {description}; {side}x{side}, guidance {GUIDANCE}, {ctx.dtype_name}, steps {lo} and {hi}")
    await worker.load(DIFFUSION, ctx.dtype_name)
    bare = BareDiffusion(ctx.tmp / "models" / DIFFUSION, ctx.device, ctx.dtype)
    try:
        command = {"address": worker.address, "device_id": worker.device_id, "dtype": ctx.dtype_name, "side": side}
        await worker.on_device_thread(lambda: bare.seconds(lo, side, 0))  # warm-up: kernels, allocator
        await ctx.client.call(_RPC_TIMEOUT, op="diffuse", job_id="sd-warm", steps=lo, seed=0, **command)
        times: dict[str, dict[int, list[float]]] = {"bare": {lo: [], hi: []}, "served": {lo: [], hi: []}}
        events: dict[int, int] = {}
        for round_index in range(profile.diffusion_rounds):
            round_started = time.perf_counter()
            for steps in (lo, hi):
                times["bare"][steps].append(
                    await worker.on_device_thread(functools.partial(bare.seconds, steps, side, round_index))
                )
                served = await ctx.client.call(_RPC_TIMEOUT, op="diffuse", job_id=f"sd-{round_index}-{steps}",
                                               steps=steps, seed=round_index, **command)
                times["served"][steps].append(served["seconds"])
                events[steps] = served["progress_events"]
            # Every round costs about the same: stop when another would not leave time for the memory section.
            if ctx.deadline.left() < (time.perf_counter() - round_started) + 20:
                break
    finally:
        bare.close()
    median = {name: {steps: statistics.median(values) for steps, values in runs.items()} for name, runs in times.items()}
    per_step = {side_name: (m[hi] - m[lo]) / (hi - lo) for side_name, m in median.items()}
    # This machine's CPU speed drifts by tens of percent within seconds (the
    # pipeline is launch-bound), so each round's served slope is compared with
    # the bare slope measured next to it, and the verdict is the median ratio.
    rounds = len(times["served"][hi])
    ratios = [
        (times["served"][hi][r] - times["served"][lo][r]) / (times["bare"][hi][r] - times["bare"][lo][r])
        for r in range(rounds)
    ]
    overhead = statistics.median(ratios) - 1
    for side_name in ("bare", "served"):
        print(f"   {side_name:<6}: {lo} steps {median[side_name][lo]:.3f} s, {hi} steps {median[side_name][hi]:.3f} s "
              f"→ {per_step[side_name] * 1000:.2f} ms/step (medians of {len(times[side_name][lo])} runs)")
    print(f"   served/bare step time, round by round: {', '.join(f'{r:.2f}' for r in ratios)} → median {overhead + 1:.3f}")
    interval = worker.settings.progress_interval_ms
    print(f"   progress events through the worker: {events[lo]} for {lo} steps, {events[hi]} for {hi} steps "
          f"(PROGRESS_INTERVAL_MS={interval:g}: first and last step, others at most every {interval:g} ms)")
    ctx.report.figures["diffusion"] = {
        "pipeline": description, "side": side, "guidance_scale": GUIDANCE, "dtype": ctx.dtype_name, "steps": [lo, hi],
        "seconds": times, "seconds_per_step": per_step, "round_ratios": ratios, "overhead": overhead,
        "progress_events": events,
        "progress_interval_ms": interval,
        "method": "(T(hi) - T(lo)) / (hi - lo) of whole text-to-image calls per round, served over bare of the same "
                  "round, median of the rounds",
    }
    ctx.report.target("diffusion step time through the worker vs bare", abs(overhead) <= DIFFUSION_TARGET,
                      f"{overhead:+.2%}", f"within ±{DIFFUSION_TARGET:.0%}")


class MemoryProbe:
    """GetMemoryStatus readings around the second worker's life: before any
    model is loaded, after loading every model, and after unloading them once
    the batching and diffusion sections have run on them."""

    def __init__(self, ctx: Context, worker: Worker, models: list[str]) -> None:
        self.ctx = ctx
        self.worker = worker
        self.models = models
        self.readings: dict[str, dict[str, Any]] = {}
        self.footprints: dict[str, int] = {}

    async def load(self) -> None:
        release(self.ctx.device)  # whatever the first worker and the bare runs left behind
        await self.worker.stub.ClearMemory(memory_pb2.ClearMemoryRequest(device_id=self.worker.device_id), timeout=60)
        self.readings["before load"] = await self.worker.memory()
        for model in self.models:
            started = time.perf_counter()
            self.footprints[model] = await self.worker.load(model, self.ctx.dtype_name)
            print(f"   loaded {model} ({self.ctx.dtype_name}) in {time.perf_counter() - started:.1f} s: "
                  f"footprint {mib(self.footprints[model])}")
        self.readings["after load"] = await self.worker.memory()

    async def unload(self) -> None:
        if "after load" not in self.readings:
            raise RuntimeError("the models were not loaded")
        stub, device_id = self.worker.stub, self.worker.device_id
        release(self.ctx.device)
        freed = 0
        for model in self.models:
            response = await stub.UnloadModel(models_pb2.UnloadModelRequest(model=model, device_id=device_id), timeout=60)
            freed += int(response.freed_bytes)
        cleared = await stub.ClearMemory(memory_pb2.ClearMemoryRequest(device_id=device_id), timeout=60)
        self.readings["after unload"] = after = await self.worker.memory()
        used = "used (NVML)" if self.ctx.kind == "cuda" else "used (host)"
        print(f"   {'':<14}{'allocated':>16}{'reserved':>16}{used:>18}")
        for label, reading in self.readings.items():
            print(f"   {label:<14}{mib(reading['allocated_bytes']):>16}{mib(reading['reserved_bytes']):>16}"
                  f"{mib(reading['used_bytes']):>18}")
        for model, footprint in self.footprints.items():
            print(f"   footprint of {model} ({self.ctx.dtype_name}): {mib(footprint)}")
        print(f"   unloading freed {mib(freed)}; ClearMemory returned {mib(int(cleared.freed_bytes))} of cache")
        before = self.readings["before load"]
        leftover = None
        if before["allocated_bytes"] is not None and after["allocated_bytes"] is not None:
            leftover = after["allocated_bytes"] - before["allocated_bytes"]
            print(f"   allocated after unload minus before load: {mib(leftover)}"
                  f" ({'all released' if leftover <= MIB else 'NOT all released'})")
        self.ctx.report.figures["memory"] = {
            **{label.replace(" ", "_"): reading for label, reading in self.readings.items()},
            "footprints": self.footprints, "freed_by_unload_bytes": freed,
            "cache_cleared_bytes": int(cleared.freed_bytes), "allocated_leftover_bytes": leftover,
        }


# ---------------------------------------------------------------- the run


async def guarded(ctx: Context, name: str, body: Callable[[], Awaitable[None]], need_seconds: float) -> None:
    if ctx.deadline.left() < need_seconds:
        ctx.report.skip(name, f"time budget of the run spent ({ctx.deadline.elapsed():.0f} s elapsed)")
        return
    profiler = await Profiler.start(ctx.profile_dir, name)
    try:
        await body()
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
        ctx.report.error(name, exc)
    finally:
        if profiler is not None:
            await profiler.stop()


class Profiler:
    """py-spy sampling this process (the worker and the bare runs) during one
    section: which thread holds the GIL, in which function (--gil --threads),
    as collapsed stacks in DIR/<section>.txt. Optional: only with
    --profile-dir and a py-spy on PATH."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, folder: Path | None, section: str) -> Profiler | None:
        binary = shutil.which("py-spy")
        if folder is None or binary is None:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / (section.replace(" ", "-").replace(",", "") + ".txt")
        process = await asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(os.getpid()), "--rate", "250", "--gil", "--threads", "--nonblocking",
            "--format", "raw", "--output", str(output), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.5)  # attached before the section starts
        return cls(process)

    async def stop(self) -> None:
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGINT)
        try:
            _, stderr = await asyncio.wait_for(self._process.communicate(), 20)
        except TimeoutError:
            self._process.kill()
            return
        if self._process.returncode not in (0, -signal.SIGINT) and stderr:
            print(f"   (py-spy: {stderr.decode(errors='replace').strip().splitlines()[-1]})")


async def run(args: argparse.Namespace, kind: str) -> int:
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else torch.device("cpu")
    dtype = torch.float16 if kind == "cuda" else torch.float32
    report = Report()
    deadline = Deadline(args.budget_seconds)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    quiet_libraries()
    profile = profile_for(args.quick, kind == "cuda", args.budget_seconds)
    header(device, report)
    print(f"profile: {'quick' if args.quick else 'full'}; batches {list(profile.batches)}, seq len {profile.seq_len}, "
          f"concurrency {profile.concurrency}, dtype {str(dtype).removeprefix('torch.')}, budget {profile.budget_seconds:.0f} s")
    report.figures["profile"] = dataclasses.asdict(profile)

    diffusers_missing = None
    if importlib.util.find_spec("diffusers") is None:
        diffusers_missing = "diffusers is not installed (the worker's diffusion handler needs it)"

    client = await LoadClient.start(args.load_processes or (4 if kind == "cuda" else 2))
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as scratch:
        tmp = Path(scratch)
        ctx = Context(profile, device, dtype, str(dtype).removeprefix("torch."), kind, tmp, client, deadline, report,
                      args.profile_dir)
        models_dir = tmp / "models"
        models_dir.mkdir()
        started = time.perf_counter()
        build_encoder(models_dir / ENCODER, profile.seq_len)
        build_encoder(models_dir / TINY_ENCODER, profile.seq_len, TINY_ENCODER_CONFIG)
        print(f"built {ENCODER} in {time.perf_counter() - started:.1f} s")
        description = ""
        if diffusers_missing is None:
            started = time.perf_counter()
            try:
                description = build_diffusion(models_dir / DIFFUSION, profile.sd_full, device, dtype)
                print(f"built {DIFFUSION} ({description}) in {time.perf_counter() - started:.1f} s")
            except ImportError as exc:
                diffusers_missing = f"diffusers cannot be used: {exc}"

        off_settings = worker_settings(tmp, profile.concurrency, max_batch_size=1)
        on_settings = worker_settings(tmp, profile.concurrency)
        off_result: dict[str, Any] = {}
        try:
            worker = await Worker.start(off_settings, kind)
            bare = BareEncoder(models_dir / ENCODER, device, dtype)
            try:
                report.section(f"1. embedding throughput, bare PyTorch vs served (worker MAX_BATCH_SIZE=1), "
                               f"{profile.seq_len} tokens, {ctx.dtype_name}")
                await guarded(ctx, "embedding throughput", lambda: embedding_section(ctx, worker, bare), 30)
                report.section(f"2. dynamic batching off (worker MAX_BATCH_SIZE=1), {profile.concurrency} concurrent single-text requests")

                async def off_round() -> None:
                    off_result.update(await batching_round(ctx, worker))
                    print(f"   {off_result['requests_per_s']:,.0f} requests/s, median batch {off_result['median_batch']} "
                          f"(rounds: {', '.join(f'{r:,.0f}/s' for r in off_result['rates'])})")

                await guarded(ctx, "batching off", off_round, 25)
            finally:
                bare.close()
                await worker.stop()

            worker = await Worker.start(on_settings, kind)
            try:
                report.section(f"3. device memory ({ctx.kind}) through GetMemoryStatus, second worker: before and after load")
                memory = MemoryProbe(ctx, worker, [ENCODER] + ([] if diffusers_missing else [DIFFUSION]))
                await guarded(ctx, "memory, load", memory.load, 20)

                report.section(f"4. dynamic batching on (worker defaults), {profile.concurrency} concurrent single-text requests")

                async def on_round() -> None:
                    if not off_result:
                        raise RuntimeError("no batching-off figure to compare with")
                    on = await batching_round(ctx, worker)
                    batching_verdict(ctx, off_result, on, off_settings, on_settings)

                await guarded(ctx, "batching on", on_round, 15)

                report.section("5. diffusion step time, bare diffusers vs served")
                if diffusers_missing:
                    report.skip("diffusion step time", diffusers_missing)
                else:
                    await guarded(ctx, "diffusion step time", lambda: diffusion_section(ctx, worker, description), 40)

                report.section(f"6. device memory ({ctx.kind}) through GetMemoryStatus: after unloading (after sections 4 and 5)")
                await guarded(ctx, "memory, unload", memory.unload, 5)
            finally:
                await worker.stop()

            if kind == "cuda":
                report.section("7. the same without CUDA graphs (EMBEDDING_CUDA_GRAPHS=false): eager passes, batch 1 and batching")
                await guarded(ctx, "eager passes", lambda: eager_section(ctx, off_settings, on_settings), 30)
        finally:
            await client.close()

    print(f"\n== summary ({deadline.elapsed():.0f} s)")
    for target in report.targets:
        print(f"   {'PASS' if target['pass'] else 'FAIL'}  {target['target']}: {target['measured']} (target {target['wanted']})")
    for skipped in report.skipped:
        print(f"   SKIPPED  {skipped['section']}: {skipped['reason']}")
    for error in report.errors:
        print(f"   ERROR  {error['section']}: {error['error']}")
    document = {**report.figures, "targets": report.targets, "skipped": report.skipped, "errors": report.errors,
                "elapsed_s": round(deadline.elapsed(), 1), "finished_unix": time.time()}
    if args.json:
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    if args.results:
        write_results(args.results, json.loads(json.dumps(document, default=str)), args.commit or current_commit())
    return 1 if report.errors else 0


# ---------------------------------------------------------------- results file


RESULTS_HEADER = """# GPU benchmark results

Written by `python-workers/bench/gpu_bench.py --results` (on the GPU machine,
or afterwards from the JSON it wrote, with `--from-json`): newest run first,
each with its machine and commit. Every ratio is measured side by side in that
run; compare runs only on the same kind of machine.
"""


def render_results(document: dict[str, Any], commit: str) -> str:
    """One run as a markdown section: machine, the embedding table, the targets."""
    machine = document.get("machine", {})
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(document.get("finished_unix", time.time())))
    gpu = machine.get("name") or f"no GPU ({machine.get('cpu')}, dry run)"
    lines = [
        f"## {when} — commit {commit}", "",
        f"{gpu}, torch {machine.get('torch')}, CUDA {machine.get('cuda')}, transformers {machine.get('transformers')}, "
        f"diffusers {machine.get('diffusers')}, grpcio {machine.get('grpcio')}, "
        f"{machine.get('usable_cpus') or machine.get('cpu_count')} CPUs; "
        f"run took {document.get('elapsed_s')} s", "",
    ]
    embedding = document.get("embedding")
    if embedding:
        lines += [
            f"Embeddings ({embedding['model']}, {embedding['seq_len']} tokens, {embedding['dtype']}; served: "
            f"CUDA graphs {embedding.get('cuda_graphs', 'n/a')}):", "",
            "| batch | bare ms | bare texts/s | bare + tokenize /s | worker tokenize /s | served /s (2 lanes) "
            "| 1-lane latency ms | served / bare |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for p in embedding["points"]:
            lines.append(
                f"| {p['batch']} | {p['bare_ms_per_batch']:.2f} | {p['bare_texts_per_s']:,.0f} | "
                f"{p['bare_with_tokenize_texts_per_s']:,.0f} | "
                f"{format(p['worker_tokenize_texts_per_s'], ',.0f') if 'worker_tokenize_texts_per_s' in p else 'n/a'} | "
                f"{p['served_texts_per_s']:,.0f} | {p['served_1_lane_latency_ms']:.2f} | "
                f"{p['ratio']:.0%} {'PASS' if p['pass'] else 'FAIL'} |"
            )
        lines.append("")
    facts = []
    batching = document.get("batching")
    if batching:
        facts.append(f"batching at {batching['concurrency']} concurrent single texts: off {batching['off']['requests_per_s']:,.0f}/s, "
                     f"on {batching['on']['requests_per_s']:,.0f}/s ({batching['ratio']:.1f}x)")
    eager = document.get("eager")
    if eager:
        facts.append(f"without CUDA graphs: batch 1 served {eager['batch1']['served_texts_per_s']:,.0f}/s, "
                     f"{eager['batch1']['latency_ms_1_lane']:.2f} ms; batching off {eager['off']['requests_per_s']:,.0f}/s, "
                     f"on {eager['on']['requests_per_s']:,.0f}/s ({eager['ratio']:.1f}x)")
    diffusion = document.get("diffusion")
    if diffusion:
        per_step = diffusion["seconds_per_step"]
        ratios = ", ".join(f"{r:.2f}" for r in diffusion.get("round_ratios", []))
        facts.append(f"diffusion ({diffusion['pipeline']}, {diffusion['side']}px): bare {per_step['bare'] * 1000:.1f} ms/step, "
                     f"served {per_step['served'] * 1000:.1f} ms/step; served/bare by round {ratios}")
    memory = document.get("memory")
    if memory:
        facts.append("device memory allocated before load / after load / after unload (MiB): "
                     + " / ".join(f"{memory[k]['allocated_bytes'] / MIB:,.0f}" if memory[k].get("allocated_bytes") is not None
                                  else "n/a" for k in ("before_load", "after_load", "after_unload")))
    lines += [f"- {fact}" for fact in facts]
    lines += ["", "| target | measured | wanted | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {t['target']} | {t['measured']} | {t['wanted']} | {'PASS' if t['pass'] else 'FAIL'} |"
              for t in document.get("targets", [])]
    lines += [f"| {e['section']} | ERROR: {e['error']} | | |" for e in document.get("errors", [])]
    return "\n".join(lines) + "\n"


def write_results(path: Path, document: dict[str, Any], commit: str) -> None:
    """Prepend this run to the results file (newest first)."""
    section = render_results(document, commit)
    previous = path.read_text(encoding="utf-8") if path.exists() else RESULTS_HEADER
    head, _, rest = previous.partition("\n## ")
    body = f"{head.rstrip()}\n\n{section}" + (f"\n## {rest}" if rest else "")
    path.write_text(body, encoding="utf-8")
    print(f"results prepended to {path}")


def current_commit() -> str:
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SCRIPT.parent, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=SCRIPT.parent, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git here)"
    return f"{commit}+changes" if dirty else commit


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no GPU (dry run)")
    parser.add_argument("--quick", action="store_true", help="small sizes: batches 1, 8, 32, concurrency 32, short diffusion")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--budget-seconds", type=float, default=270.0,
                        help="wall-clock budget; sections that would not fit are skipped (default 270)")
    parser.add_argument("--load-processes", type=int, default=0,
                        help="load-generator processes for the concurrency test (default 4 on CUDA, 2 on the CPU)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval for this process (the worker's), to compare with the default")
    parser.add_argument("--profile-dir", type=Path, default=None,
                        help="sample each section with py-spy (when on PATH) into this folder")
    parser.add_argument("--results", type=Path, default=None,
                        help="prepend this run's figures to a markdown results file (e.g. python-workers/bench/RESULTS.md)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="do not run: render a JSON this script wrote (on a GPU machine) into --results")
    parser.add_argument("--commit", default=None, help="the commit the figures belong to (default: git here)")
    parser.add_argument("--load-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_client:
        return asyncio.run(load_client_main())
    if args.from_json is not None:
        if args.results is None:
            parser.error("--from-json needs --results")
        document = json.loads(args.from_json.read_text(encoding="utf-8"))
        document.setdefault("finished_unix", args.from_json.stat().st_mtime)
        write_results(args.results, document, args.commit or current_commit())
        return 0

    import torch

    if torch.cuda.is_available():
        kind = "cuda"
    elif args.allow_cpu:
        kind = "cpu"
    else:
        print("no CUDA device here; run on a GPU machine (or --allow-cpu for a dry run)", file=sys.stderr)
        return 2
    return asyncio.run(run(args, kind))


if __name__ == "__main__":
    sys.exit(main())
