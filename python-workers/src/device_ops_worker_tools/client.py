"""A command-line gRPC client for a worker, without the gateway.

    python -m device_ops_worker_tools.client --address 127.0.0.1:50051 image "a lighthouse at dusk"
    python -m device_ops_worker_tools.client --address 127.0.0.1:50051 embed "first text" "second text"
    python -m device_ops_worker_tools.client --address 127.0.0.1:50051 models

A worker that requires a token gets it from WORKER_TOKEN (or --token, which
other users can read in ps); a TLS worker needs --ca, and --cert/--key when
it requires client certificates.

Internal services call workers the same way: one channel, a deadline on
every call, the job's events read until the terminal one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc

from device_ops.v1 import inference_pb2, models_pb2, worker_service_pb2_grpc


def _print(payload: object) -> None:
    print(json.dumps(payload, indent=2))


Metadata = tuple[tuple[str, str], ...]


def _read(flag: str, path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"device_ops_worker_tools.client: {flag} {path}: {exc.strerror or exc}") from None


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.ca is None:
        return grpc.insecure_channel(args.address)
    if (args.cert is None) != (args.key is None):
        raise SystemExit("device_ops_worker_tools.client: --cert and --key go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read("--ca", args.ca),
        private_key=_read("--key", args.key),
        certificate_chain=_read("--cert", args.cert),
    )
    return grpc.secure_channel(args.address, credentials)


def _run_job(
    stub: worker_service_pb2_grpc.WorkerServiceStub, request: inference_pb2.InferRequest, timeout: float, metadata: Metadata
) -> int:
    for event in stub.Infer(request, timeout=timeout, metadata=metadata):
        kind = event.WhichOneof("event")
        if kind == "progress":
            print(f"progress {event.progress.current}/{event.progress.total}", file=sys.stderr)
        elif kind == "result":
            result = event.result
            _print(
                {
                    "jobId": request.job_id,
                    "device": result.device_id,
                    "runMs": round(result.run_ms, 1),
                    "seed": result.seed if result.HasField("seed") else None,
                    "files": [{"path": f.path, "sha256": f.sha256, "width": f.width, "height": f.height} for f in result.files],
                    "embeddings": [list(e.values[:8]) + (["…"] if len(e.values) > 8 else []) for e in result.embeddings],
                    "dimensions": [len(e.values) for e in result.embeddings],
                }
            )
            return 0
        elif kind == "error":
            print(f"error {event.error.code}: {event.error.message}", file=sys.stderr)
            return 1
        elif kind == "cancelled":
            print(f"cancelled: {event.cancelled.reason}", file=sys.stderr)
            return 1
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="device_ops_worker_tools.client", description=__doc__.split("\n")[0])
    parser.add_argument("--address", default="127.0.0.1:50051", help="worker host:port")
    parser.add_argument("--timeout", type=float, default=300, help="deadline of the call in seconds")
    parser.add_argument(
        "--token",
        default=os.environ.get("WORKER_TOKEN") or None,
        help="the worker's token (default: env WORKER_TOKEN, preferred: a flag is visible in ps)",
    )
    parser.add_argument("--ca", help="CA certificate (PEM) of a TLS worker; enables TLS")
    parser.add_argument("--cert", help="client certificate (PEM) for a worker that requires one")
    parser.add_argument("--key", help="client private key (PEM) for --cert")
    commands = parser.add_subparsers(dest="command", required=True)
    image = commands.add_parser("image", help="text-to-image")
    image.add_argument("prompt")
    image.add_argument("--model", default="tiny-sd")
    image.add_argument("--steps", type=int, default=10)
    image.add_argument("--size", type=int, default=256)
    image.add_argument("--seed", type=int)
    embed = commands.add_parser("embed", help="text-embedding")
    embed.add_argument("texts", nargs="+")
    embed.add_argument("--model", default="minilm")
    commands.add_parser("models", help="list the repository")
    args = parser.parse_args(argv)

    metadata: Metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    with _channel(args) as channel:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        try:
            if args.command == "models":
                response = stub.ListModels(models_pb2.ListModelsRequest(), timeout=args.timeout, metadata=metadata)
                _print([{"name": m.name, "task": models_pb2.ModelTask.Name(m.task), "sizeBytes": m.size_bytes} for m in response.models])
                return 0
            job_id = f"cli-{uuid.uuid4().hex[:12]}"
            if args.command == "image":
                generation = inference_pb2.ImageGenerationInput(
                    prompt=args.prompt, steps=args.steps, width=args.size, height=args.size
                )
                if args.seed is not None:
                    generation.seed = args.seed
                request = inference_pb2.InferRequest(
                    job_id=job_id, model=args.model, task=models_pb2.MODEL_TASK_TEXT_TO_IMAGE, image_generation=generation
                )
            else:
                request = inference_pb2.InferRequest(
                    job_id=job_id,
                    model=args.model,
                    task=models_pb2.MODEL_TASK_TEXT_EMBEDDING,
                    text_embedding=inference_pb2.TextEmbeddingInput(texts=args.texts, normalize=True),
                )
            return _run_job(stub, request, args.timeout, metadata)
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
