"""The official OpenAI Python SDK calling the gateway's OpenAI-compatible routes.

Nothing here is specific to this gateway but the base URL: the same code runs
against OpenAI. Requirements: `openai` (python-workers/.venv/bin/python has it).

    OPENAI_BASE_URL=http://localhost:8080/v1 OPENAI_API_KEY=dok_... \\
        python examples/openai-client/client.py embed "hello" "world"
    python examples/openai-client/client.py embed-tokens 101,7592,102 101,2088,102
    python examples/openai-client/client.py image "a lighthouse at dusk" --size 64x64 --steps 3 --format b64_json
    python examples/openai-client/client.py models

OPENAI_BASE_URL and OPENAI_API_KEY are read by the SDK itself (an API key or a
JWT: both go as `Authorization: Bearer`). Each result is one JSON line; a
refused call prints {"error": {"class", "status", "body"}} and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys

import openai


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-retries", type=int, default=2, help="the SDK's own retries (429, 5xx)")
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser("embed", help="embed texts")
    embed.add_argument("texts", nargs="+")
    embed.add_argument("--model", default="minilm")
    embed.add_argument("--format", choices=["float", "base64"], default=None, help="encoding_format (default: the SDK's)")
    embed.add_argument("--dimensions", type=int)
    tokens = commands.add_parser("embed-tokens", help="embed token arrays, each given as comma-separated ids")
    tokens.add_argument("arrays", nargs="+")
    tokens.add_argument("--model", default="minilm")
    image = commands.add_parser("image", help="generate images")
    image.add_argument("prompt")
    image.add_argument("--model", default="tiny-sd")
    image.add_argument("--size", default="512x512")
    image.add_argument("-n", type=int, default=1)
    image.add_argument("--format", choices=["url", "b64_json"], default="b64_json")
    image.add_argument("--steps", type=int, help="extension: denoising steps")
    image.add_argument("--seed", type=int, help="extension: the seed")
    commands.add_parser("models", help="list the models")
    args = parser.parse_args()

    client = openai.OpenAI(max_retries=args.max_retries)
    try:
        if args.command == "embed":
            options = {"encoding_format": args.format} if args.format else {}
            if args.dimensions is not None:
                options["dimensions"] = args.dimensions
            raw = client.embeddings.with_raw_response.create(model=args.model, input=args.texts, **options)
            response = raw.parse()
            print_line(
                {
                    "sessionId": raw.headers.get("x-session-id"),
                    "vectors": [item.embedding for item in response.data],
                    "usage": response.usage.model_dump(),
                }
            )
        elif args.command == "embed-tokens":
            arrays = [[int(token) for token in array.split(",")] for array in args.arrays]
            response = client.embeddings.create(model=args.model, input=arrays, encoding_format="float")
            print_line({"vectors": [item.embedding for item in response.data], "usage": response.usage.model_dump()})
        elif args.command == "image":
            extra = {key: value for key, value in (("steps", args.steps), ("seed", args.seed)) if value is not None}
            response = client.images.generate(
                model=args.model, prompt=args.prompt, size=args.size, n=args.n, response_format=args.format, extra_body=extra
            )
            print_line({"created": response.created, "images": [item.b64_json or item.url for item in response.data]})
        else:
            print_line({"models": [model.model_dump() for model in client.models.list()]})
    except openai.APIStatusError as error:
        print_line({"error": {"class": type(error).__name__, "status": error.status_code, "body": error.body}})
        return 1
    return 0


def print_line(document: object) -> None:
    sys.stdout.write(json.dumps(document) + "\n")


if __name__ == "__main__":
    sys.exit(main())
