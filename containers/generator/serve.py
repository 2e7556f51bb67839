"""A text-generation container that streams, as SageMaker's LLM containers do: `POST /invocations`
with `{"inputs": "prompt", "parameters": {"max_new_tokens": 20, "seed": 0}}` answers JSON lines in HTTP
chunks, one per generated token, `{"token": {"id": N, "text": "word"}}`, then
`{"generated_text": "..."}`, each written as it is generated (InvokeEndpointWithResponseStream relays
them as they come). The model is a bigram model of words (build_model.py); `"stream": false` answers one
JSON object instead. SageMaker's contract: `GET /ping`, SAGEMAKER_BIND_TO_PORT (default 8080).
Standard library only.

    python containers/generator/serve.py          (MCE_MODEL_DIR: where model.json is)
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# how long a token takes to "generate": long enough to watch the stream arrive (0 for the benchmark)
TOKEN_SECONDS = float(os.environ.get("GENERATOR_TOKEN_SECONDS", "0.02"))


class Generator:
    def __init__(self, model: dict[str, Any]) -> None:
        self.vocabulary: list[str] = list(model["vocabulary"])
        self.next: dict[str, dict[str, int]] = dict(model["next"])
        self.ids = {word: index for index, word in enumerate(self.vocabulary)}

    def tokens(self, prompt: str, count: int, seed: int) -> list[str]:
        rng = random.Random(seed)
        words = prompt.lower().split()
        word = words[-1] if words and words[-1] in self.next else "beautiful"
        out = []
        for _ in range(count):
            choices = self.next.get(word) or {"beautiful": 1}
            word = rng.choices(list(choices), weights=list(choices.values()))[0]
            out.append(word)
        return out


def load() -> Generator:
    folder = Path(os.environ.get("MCE_MODEL_DIR", "/opt/ml/model"))
    return Generator(json.loads((folder / "model.json").read_text()))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    generator: Generator

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._whole(200 if self.path == "/ping" else 404, b"", "text/plain")

    def do_POST(self) -> None:
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            prompt = str(request["inputs"])
            parameters = request.get("parameters", {})
            count = int(parameters.get("max_new_tokens", 20))
            seed = int(parameters.get("seed", 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            self._whole(
                400, b'expected {"inputs": "prompt", "parameters": {"max_new_tokens": N}}', "text/plain"
            )
            return
        if not 1 <= count <= 512:
            self._whole(400, b"max_new_tokens must be between 1 and 512", "text/plain")
            return
        tokens = self.generator.tokens(prompt, count, seed)
        text = " ".join(tokens)
        if not request.get("stream", True):
            self._whole(200, json.dumps({"generated_text": text}).encode(), "application/json")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/jsonlines")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for word in tokens:
            time.sleep(TOKEN_SECONDS)
            self._chunk(json.dumps({"token": {"id": self.generator.ids.get(word, -1), "text": word}}) + "\n")
        self._chunk(json.dumps({"generated_text": text}) + "\n")
        self._chunk("")

    def _chunk(self, line: str) -> None:
        data = line.encode()
        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        self.wfile.flush()

    def _whole(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    Handler.generator = load()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host = os.environ.get("MCE_BIND_ADDRESS", "0.0.0.0")
    server = ThreadingHTTPServer((host, int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))), Handler)
    server.daemon_threads = True
    print(f"generator listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
