"""SageMaker's framework containers natively (containers/tensorflow-inference, containers/pytorch-inference),
measured with the seed blog's models and bodies (examples/seed-blog/build_models.py): each container's
cold start, and an invocation's latency called directly against through the gateway, in the same run.

    cold start  from spawning the container's serve.py to its first 200 on /invocations (its model
                loaded: TorchServe's /ping says healthy before the worker is up), per container
    warm        one kept-alive connection, one request at a time (c=1), 5 images per request: the
                container's own /invocations directly, then the gateway's (`mce serve`, a Direct
                endpoint of both, X-Amzn-SageMaker-Target-Container-Hostname); rounds alternate;
                medians and p99

    .venv/bin/python bench/frameworks.py [--requests 300] [--rounds 3] [--out DIR] [--smoke]
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
import tarfile
import tempfile
import time
from pathlib import Path

from overhead import ROOT, free_port, p99

from gateway.launch.ports import allocate

BUILT = ROOT / "build" / "seed-blog"
CONTAINERS = {  # hostname: (serve.py, image, request body key)
    "tensorflow-mnist": (
        "containers/tensorflow-inference/serve.py",
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.3.1-cpu",
    ),
    "pytorch-mnist": (
        "containers/pytorch-inference/serve.py",
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:1.8.1-cpu-py36",
    ),
}


def bodies() -> dict[str, bytes]:
    images = json.loads((BUILT / "test.json").read_text())["images"][:5]
    return {
        "tensorflow-mnist": json.dumps(
            {"instances": [[[[v] for v in r] for r in i] for i in images]}
        ).encode(),
        "pytorch-mnist": json.dumps({"inputs": [[image] for image in images]}).encode(),
    }


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) as connection:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        response.read()
        return response.status


def start(hostname: str, work: Path, body: bytes) -> tuple[subprocess.Popen[bytes], int, float]:
    """The container, and its port and cold start (spawn to the first answered invocation)."""
    script, image = CONTAINERS[hostname]
    model = work / hostname / "model"
    model.mkdir(parents=True)
    with tarfile.open(BUILT / hostname.split("-")[0] / "model.tar.gz") as archive:
        archive.extractall(model, filter="data")
    ports = allocate()  # as mce up allocates them
    port = ports.bind
    env = {
        **os.environ,
        **ports.environment(),
        "SAGEMAKER_PROGRAM": "inference.py",
        "MCE_MODEL_DIR": str(model),
        "MCE_RUN_DIR": str(work / hostname / "run"),
        "MCE_BIND_ADDRESS": "127.0.0.1",
        "MCE_IMAGE": image,
    }
    began = time.perf_counter()
    log = (work / f"{hostname}.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / script)], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if post(port, "/invocations", body, {"Content-Type": "application/json"}) == 200:
                return proc, port, time.perf_counter() - began
        except OSError:
            pass
        time.sleep(0.05)  # a server this script started: nothing to wait on but its answer
    proc.kill()
    raise RuntimeError(f"{hostname} did not answer in time (exit status {proc.poll()}, log {log.name})")


def timed(port: int, path: str, body: bytes, headers: dict[str, str], requests: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    for _ in range(requests):
        began = time.perf_counter()
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        answer = response.read()
        assert response.status == 200, answer
        latencies.append(time.perf_counter() - began)
    connection.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="a few requests: every path answers")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.rounds = 5, 1
    subprocess.run([sys.executable, str(ROOT / "examples" / "seed-blog" / "build_models.py")], check=True)
    work = Path(tempfile.mkdtemp(prefix="mce-bench-frameworks-"))
    body = bodies()
    procs: list[subprocess.Popen[bytes]] = []
    ports, cold = {}, {}
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for hostname in CONTAINERS:
            proc, ports[hostname], cold[hostname] = start(hostname, work, body[hostname])
            procs.append(proc)
        document = work / "endpoint.json"
        document.write_text(
            json.dumps(
                {
                    "EndpointName": "seed-blog",
                    "Containers": [
                        {"ContainerHostname": h, "Backend": {"Url": f"http://127.0.0.1:{p}"}}
                        for h, p in ports.items()
                    ],
                    "InferenceExecutionConfig": {"Mode": "Direct"},
                }
            )
        )
        gateway_port = free_port()
        argv = [sys.executable, "-m", "gateway", "serve", str(document), "--port", str(gateway_port)]
        gateway = subprocess.Popen([*argv, "--no-metrics"], cwd=ROOT, stdout=subprocess.DEVNULL)
        procs.append(gateway)
        deadline = time.monotonic() + 60
        while True:
            try:
                with contextlib.closing(http.client.HTTPConnection("127.0.0.1", gateway_port)) as probe:
                    probe.request("GET", "/ping")
                    if probe.getresponse().status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        json_type = {"Content-Type": "application/json", "Accept": "application/json"}
        for _ in range(args.rounds):
            for hostname, port in ports.items():
                sides = (
                    ("direct", port, "/invocations", json_type),
                    (
                        "gateway",
                        gateway_port,
                        "/endpoints/seed-blog/invocations",
                        {**json_type, "X-Amzn-SageMaker-Target-Container-Hostname": hostname},
                    ),
                )
                for side, side_port, path, headers in sides:
                    timed(side_port, path, body[hostname], headers, 3)  # warm the connection
                    got = timed(side_port, path, body[hostname], headers, args.requests)
                    results.setdefault((hostname, side), []).extend(got)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(60)
    lines = [
        f"# SageMaker's framework containers, natively ({datetime.date.today().isoformat()})",
        "",
        f"Command: `.venv/bin/python bench/frameworks.py --requests {args.requests} --rounds {args.rounds}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. The seed "
        "blog's models and bodies (5 images of 28x28 per request), c=1 on a kept-alive connection.",
        "",
        "| container | cold start (s) | direct p50 (ms) | gateway p50 (ms) | added p50 (us) "
        "| direct p99 (ms) | gateway p99 (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for hostname in CONTAINERS:
        direct, through = results[(hostname, "direct")], results[(hostname, "gateway")]
        added = statistics.median(through) - statistics.median(direct)
        lines.append(
            f"| {hostname} | {cold[hostname]:.1f} | {statistics.median(direct) * 1e3:.2f} | "
            f"{statistics.median(through) * 1e3:.2f} | {added * 1e6:.0f} | {p99(direct) * 1e3:.2f} | "
            f"{p99(through) * 1e3:.2f} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"frameworks-{datetime.date.today().isoformat()}.md").write_text(report)


if __name__ == "__main__":
    main()
