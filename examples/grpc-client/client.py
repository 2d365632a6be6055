"""An internal service calling the gateway's public gRPC API.

Stubs are generated from the repository's proto/ with grpcio-tools at start
(a real service would generate them at build time), so this file is the whole
client. Requirements: grpcio, grpcio-tools, grpcio-status (the worker's
development environment has them: python-workers/.venv/bin/python).

    python examples/grpc-client/client.py --address localhost:50051 whoami
    python examples/grpc-client/client.py embed "hello" "world"
    python examples/grpc-client/client.py generate "a lighthouse at dusk" --steps 3
    python examples/grpc-client/client.py watch <session id> --after 2

Credentials come from GATEWAY_TOKEN (a JWT, sent as `authorization: Bearer`)
or GATEWAY_API_KEY (sent as `x-api-key`). Every result is printed as one JSON
line; a refused call prints {"error": {...}} with the status code, the
message, the fields a BadRequest names and the retry delay, and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
SERVICE_PROTO = "device_ops/gateway/v1/gateway_service.proto"


def load_stubs():
    """Generate and import the gateway stubs (messages and the service stub)."""
    out = tempfile.mkdtemp(prefix="device-ops-stubs-")
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "device_ops/gateway/v1").glob("*.proto"))
    code = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if code != 0:
        raise SystemExit(f"protoc failed ({code})")
    sys.path.insert(0, out)
    messages = {name: importlib.import_module(f"device_ops.gateway.v1.{name}_pb2") for name in ("gateway_devices", "gateway_inference", "gateway_models")}
    service = importlib.import_module("device_ops.gateway.v1.gateway_service_pb2_grpc")
    return messages, service


def credentials() -> list[tuple[str, str]]:
    if os.environ.get("GATEWAY_API_KEY"):
        return [("x-api-key", os.environ["GATEWAY_API_KEY"])]
    if os.environ.get("GATEWAY_TOKEN"):
        return [("authorization", f"Bearer {os.environ['GATEWAY_TOKEN']}")]
    return []


def as_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


def describe_error(error: grpc.RpcError) -> dict:
    """The status, and what its google.rpc details say: the invalid fields, the retry delay, the reason."""
    described: dict = {"code": error.code().name, "message": error.details()}
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            described["fields"] = [v.field for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            described["retryAfterSeconds"] = retry.retry_delay.seconds
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            described["reason"] = info.reason
            described["errorId"] = info.metadata.get("errorId")
    for key, value in error.trailing_metadata() or ():
        if key == "x-request-id":
            described["correlationId"] = value
    return described


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("GATEWAY_GRPC_ADDRESS", "localhost:50051"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("whoami")
    commands.add_parser("devices")
    embed = commands.add_parser("embed")
    embed.add_argument("texts", nargs="+")
    generate = commands.add_parser("generate", help="text-to-image as a stream of events")
    generate.add_argument("prompt")
    generate.add_argument("--steps", type=int, default=25)
    generate.add_argument("--size", type=int, default=512)
    submit = commands.add_parser("submit", help="text-to-image as a background session")
    submit.add_argument("prompt")
    submit.add_argument("--steps", type=int, default=25)
    submit.add_argument("--size", type=int, default=512)
    watch = commands.add_parser("watch")
    watch.add_argument("session_id")
    watch.add_argument("--after", type=int, default=0)
    args = parser.parse_args(argv)

    messages, service = load_stubs()
    devices, inference = messages["gateway_devices"], messages["gateway_inference"]
    metadata = credentials()
    with grpc.insecure_channel(args.address) as channel:
        stub = service.DeviceOperationsStub(channel)
        try:
            if args.command == "whoami":
                print(json.dumps(as_json(stub.WhoAmI(devices.WhoAmIRequest(), metadata=metadata))))
            elif args.command == "devices":
                print(json.dumps(as_json(stub.ListDevices(devices.ListDevicesRequest(), metadata=metadata))))
            elif args.command == "embed":
                request = inference.InferenceRequest(model="minilm", text_embedding=inference.TextEmbeddingParameters(texts=args.texts, normalize=True))
                print(json.dumps(as_json(stub.Execute(request, metadata=metadata))))
            elif args.command in ("generate", "submit"):
                parameters = inference.TextToImageParameters(prompt=args.prompt, steps=args.steps, width=args.size, height=args.size)
                request = inference.InferenceRequest(model="tiny-sd", text_to_image=parameters)
                if args.command == "submit":
                    print(json.dumps(as_json(stub.CreateSession(request, metadata=metadata))))
                else:
                    for event in stub.ExecuteStream(request, metadata=metadata):
                        print(json.dumps(as_json(event)), flush=True)
            elif args.command == "watch":
                request = inference.WatchSessionRequest(id=args.session_id, after_sequence=args.after)
                for event in stub.WatchSession(request, metadata=metadata):
                    print(json.dumps(as_json(event)), flush=True)
        except grpc.RpcError as error:
            print(json.dumps({"error": describe_error(error)}))
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
