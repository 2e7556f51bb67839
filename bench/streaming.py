"""InvokeEndpointWithResponseStream, measured: time to the first event and the cost per event through the
gateway, against reading the container's own chunks directly, in the same run.

The container is containers/generator/serve.py with no generation delay (each token is one JSON line in
one HTTP chunk, written at once). Both sides are read the same way, with http.client on a kept-alive
connection: the request is sent, then the body is read as it comes (`read1`). "First" is the time from
sending the request to the first body bytes (the first chunk directly, the first PayloadPart event
through the gateway); "whole" is the time to the end of the answer. Per event = (whole through the
gateway - whole direct) / tokens. Rounds alternate direct and gateway; medians.

    .venv/bin/python bench/streaming.py [--tokens 64] [--requests 300] [--rounds 3] [--out DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead import ROOT, free_port

ENDPOINT = "generate"


def start(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=2)) as probe:
                probe.request("GET", "/ping")
                if probe.getresponse().status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)  # start-up of a server this script started: nothing to wait on but the port
    proc.kill()
    raise RuntimeError(f"{argv} did not answer /ping on port {port}")


def timed(port: int, path: str, body: bytes, requests: int) -> tuple[list[float], list[float]]:
    """(first bytes, whole answer) seconds for each of `requests` calls on one kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    first, whole = [], []
    headers = {"Content-Type": "application/json", "Accept": "application/jsonlines"}
    for _ in range(requests):
        began = time.perf_counter()
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        got_first = 0.0
        while response.read1(65536):
            if not got_first:
                got_first = time.perf_counter()
        ended = time.perf_counter()
        first.append(got_first - began)
        whole.append(ended - began)
    connection.close()
    return first, whole


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="a few requests: every path answers")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.rounds = 5, 1
    subprocess.run([sys.executable, str(ROOT / "containers" / "generator" / "build_model.py")], check=True)
    work = Path(tempfile.mkdtemp(prefix="mce-bench-stream-"))
    container_port, gateway_port = free_port(), free_port()
    container = start(
        [sys.executable, str(ROOT / "containers" / "generator" / "serve.py")],
        {
            "SAGEMAKER_BIND_TO_PORT": str(container_port),
            "MCE_BIND_ADDRESS": "127.0.0.1",
            "MCE_MODEL_DIR": str(ROOT / "build" / "generator"),
            "GENERATOR_TOKEN_SECONDS": "0",
        },
        container_port,
    )
    document = work / "endpoint.json"
    document.write_text(
        json.dumps(
            {
                "EndpointName": ENDPOINT,
                "PrimaryContainer": {"Backend": {"Url": f"http://127.0.0.1:{container_port}"}},
            }
        )
    )
    body = json.dumps({"inputs": "Beautiful is", "parameters": {"max_new_tokens": args.tokens}}).encode()
    results: dict[str, tuple[list[float], list[float]]] = {"direct": ([], []), "gateway": ([], [])}
    gateway = None
    try:
        gateway = start(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                str(document),
                "--port",
                str(gateway_port),
                "--no-metrics",
            ],
            {"PYTHONWARNINGS": "ignore"},
            gateway_port,
        )
        for _ in range(args.rounds):
            for name, port, path in (
                ("direct", container_port, "/invocations"),
                ("gateway", gateway_port, f"/endpoints/{ENDPOINT}/invocations-response-stream"),
            ):
                timed(port, path, body, 3)  # warm the connection and the pools
                first, whole = timed(port, path, body, args.requests)
                results[name][0].extend(first)
                results[name][1].extend(whole)
    finally:
        for proc in (gateway, container):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    medians = {name: (statistics.median(f), statistics.median(w)) for name, (f, w) in results.items()}
    per_event = (medians["gateway"][1] - medians["direct"][1]) / (args.tokens + 1)
    first_added = medians["gateway"][0] - medians["direct"][0]
    lines = [
        f"# InvokeEndpointWithResponseStream ({datetime.date.today().isoformat()})",
        "",
        f"Command: `.venv/bin/python bench/streaming.py --tokens {args.tokens} --requests {args.requests} "
        f"--rounds {args.rounds}`. Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}. {args.tokens} tokens per answer ({args.tokens + 1} JSON lines, one "
        f"chunk each), {args.requests} requests x {args.rounds} rounds per side; medians.",
        "",
        "| | first bytes (us) | whole answer (us) |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {f * 1e6:.0f} | {w * 1e6:.0f} |" for name, (f, w) in medians.items()),
        "",
        f"Time to first event, added by the gateway: {first_added * 1e6:.0f} us. "
        f"Per event (one chunk in, one PayloadPart out): {per_event * 1e6:.1f} us.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"streaming-{datetime.date.today().isoformat()}.md").write_text(report)


if __name__ == "__main__":
    main()
