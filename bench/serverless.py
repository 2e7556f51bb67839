"""A serverless variant's cold start, measured: one `mce up --serverless-idle 1` serving a serverless
endpoint on the nginx-made container (bench/nginx-container.sh) and on the example echo container
(examples/containers/echo.py, a Python server), each round waiting until the variant has scaled to zero
(mce_serverless_warm 0), then timing the first invocation (it waits for the containers to start) and the
median of the next 50 (warm).

    .venv/bin/python bench/serverless.py [--rounds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from local_sagemaker import HERE, LocalSageMaker
from overhead import ROOT, provenance, publish

IMAGES = {
    "bench/nginx:1": ["sh", str(HERE / "nginx-container.sh")],
    "bench/echo:1": ["python", str(ROOT / "examples" / "containers" / "echo.py")],
}


def warm(url: str, endpoint: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("mce_serverless_warm{") and f'endpoint="{endpoint}"' in line:
                return float(line.rsplit(" ", 1)[1])
    raise RuntimeError(f"no mce_serverless_warm for {endpoint}")


def invoke(port: int, endpoint: str) -> float:
    """Seconds for one InvokeEndpoint on a fresh connection (the gateway's; no client signing)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    began = time.perf_counter()
    connection.request(
        "POST", f"/endpoints/{endpoint}/invocations", body=b"{}", headers={"Content-Type": "application/json"}
    )
    answer = connection.getresponse()
    answer.read()
    took = time.perf_counter() - began
    connection.close()
    if answer.status != 200:
        raise RuntimeError(f"{endpoint}: {answer.status}")
    return took


def deploy(sm: Any, name: str, image: str) -> None:
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::000000000000:role/bench",
        PrimaryContainer={"Image": image},
    )
    serverless = {"MemorySizeInMB": 1024, "MaxConcurrency": 5}
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": serverless}],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if shutil.which("nginx") is None:
        print("bench: nginx is missing; bench/run installs it", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mce-serverless-bench-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user
    images = work / "images.yaml"
    images.write_text(
        json.dumps(
            {"Images": [{"Image": i, "Backend": {"Launch": {"Command": c}}} for i, c in IMAGES.items()]}
        )
    )
    local = LocalSageMaker(work, "state", images, "--serverless-idle", "1", metrics=True)
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:
        sm = local.client()
        for name, image in (("nginx", "bench/nginx:1"), ("python", "bench/echo:1")):
            deploy(sm, name, image)
            cold, warm_p50 = [], []
            for round_ in range(args.rounds):
                deadline = time.monotonic() + 60
                while (
                    warm(local.url, name) != 0
                ):  # the variant scales to zero after 1 s without an invocation
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} never scaled to zero")
                    time.sleep(0.1)
                cold.append(invoke(local.port, name))
                warm_p50.append(statistics.median(invoke(local.port, name) for _ in range(50)))
                took = f"cold {cold[-1] * 1e3:.0f} ms, warm p50 {warm_p50[-1] * 1e3:.2f} ms"
                print(f"  {name} round {round_ + 1}: {took}", file=sys.stderr)
            results[name] = (cold, warm_p50)
    finally:
        local.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# Serverless: the first invocation after scaling to zero",
        "",
        *provenance(f".venv/bin/python bench/serverless.py --rounds {args.rounds}"),
        "",
        "| container | cold start, median (ms) | cold start, worst (ms) | warm p50 (ms) |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {name} | {statistics.median(cold) * 1e3:.0f} | {max(cold) * 1e3:.0f} | "
            f"{statistics.median(warm_p50) * 1e3:.2f} |"
            for name, (cold, warm_p50) in results.items()
        ),
        "",
        "Each time is one InvokeEndpoint on a new connection, from the request to the last byte of the",
        "answer; the cold one includes starting the container and its health check passing (polled every",
        "0.05 s while an invocation waits).",
    ]
    publish(lines, args.out, "serverless")
    return 0


if __name__ == "__main__":
    sys.exit(main())
