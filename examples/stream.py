"""Stream generated tokens with boto3, as an LLM client does: InvokeEndpointWithResponseStream, each
PayloadPart as it arrives, JSON lines rebuilt across parts (a line may be split between two).

.venv/bin/python examples/stream.py [URL] [PROMPT]      (the `generate` endpoint of examples/generate.yaml)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator

import boto3


def lines(events: Iterable[dict[str, dict[str, bytes]]]) -> Iterator[bytes]:
    """Whole lines from the stream's PayloadParts."""
    pending = b""
    for event in events:
        pending += event["PayloadPart"]["Bytes"]
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8082"
    prompt = sys.argv[2] if len(sys.argv) > 2 else "Beautiful is"
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    answer = runtime.invoke_endpoint_with_response_stream(
        EndpointName="generate",
        ContentType="application/json",
        Accept="application/jsonlines",
        Body=json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 16, "seed": 7}}),
    )
    print(prompt, end="", flush=True)
    for line in lines(answer["Body"]):
        item = json.loads(line)
        if "token" in item:
            print(" " + item["token"]["text"], end="", flush=True)  # each word as it comes
    print()


if __name__ == "__main__":
    main()
