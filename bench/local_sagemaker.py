"""The local SageMaker (`mce up`), measured: how long the seed endpoint takes from boto3's create_endpoint
to InService, and what an invocation costs with 50 endpoints on one port against one.

    create    the seed endpoint (TF Serving stand-in + TorchServe, Direct mode): create_endpoint, then the
              `endpoint_in_service` waiter with botocore's own 30 s delay, timed until it returns; beside
              it, the slower container's own start as mce reports it ("ready in X s"); then deleted and
              created again, --rounds times
    endpoints two `mce up`, one holding 1 endpoint and one holding 50 (each endpoint one container of
              bench/nginx-container.sh, which answers at once); wrk POSTs ~1 KiB, spread over every
              endpoint in turn, c=1 (p50) and c=32 (req/s, the gateway's CPU per request); rounds
              interleaved, medians

    .venv/bin/python bench/local_sagemaker.py [--seconds 5] [--rounds 3] [--endpoints 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from overhead import ROOT, Sample, free_port, measure, provenance, publish

HERE = Path(__file__).resolve().parent
READY = re.compile(r"\+ (\S+)\s+ready\s+in ([\d.]+) s")


class LocalSageMaker:
    """`mce up` with an image map, its console read as it comes."""

    def __init__(self, work: Path, name: str, images: Path, *extra: str, metrics: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "gateway", "up", "--port", str(self.port), "--log-level", "warning"]
        argv += ["--state", str(work / name), "--images", str(images), *extra]
        argv += [] if metrics else ["--no-metrics"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.ready: list[tuple[str, float]] = []  # (container, seconds) as mce printed them
        self.listening = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.listening.wait(120):
            raise RuntimeError(f"mce up ({name}) did not start")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "listening on" in line:
                self.listening.set()
            found = READY.search(line)
            if found:
                self.ready.append((found.group(1), float(found.group(2))))
        self.listening.set()

    def client(self) -> Any:
        return boto3.client(
            "sagemaker",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"max_attempts": 1}, read_timeout=70),
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)


def deploy(sm: Any, name: str, model: dict[str, Any]) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn="arn:aws:iam::000000000000:role/bench", **model)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1}],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def create_to_in_service(local: LocalSageMaker, rounds: int) -> list[tuple[float, float]]:
    """(create_endpoint to the waiter's return, the slower container's own start) per round."""
    sm = local.client()
    model = {
        "Containers": [
            {
                "ContainerHostname": "tensorflow-mnist",
                "Image": "mce/tensorflow-mnist:latest",
                "ModelDataUrl": str(ROOT / "build" / "tensorflow" / "model"),
            },
            {
                "ContainerHostname": "pytorch-mnist",
                "Image": "mce/pytorch-mnist:latest",
                "ModelDataUrl": str(ROOT / "build" / "pytorch" / "model-store"),
            },
        ],
        "InferenceExecutionConfig": {"Mode": "Direct"},
    }
    sm.create_model(ModelName="seed", ExecutionRoleArn="arn:aws:iam::000000000000:role/bench", **model)
    sm.create_endpoint_config(
        EndpointConfigName="seed",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "seed", "InitialInstanceCount": 1}],
    )
    times = []
    for _ in range(rounds):
        local.ready.clear()
        began = time.monotonic()
        sm.create_endpoint(EndpointName="seed", EndpointConfigName="seed")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="seed")  # botocore's own 30 s delay
        took = time.monotonic() - began
        times.append((took, max(seconds for _, seconds in local.ready)))
        sm.delete_endpoint(EndpointName="seed")
        sm.get_waiter("endpoint_deleted").wait(EndpointName="seed", WaiterConfig={"Delay": 1})
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing; bench/run installs it", file=sys.stderr)
            return 2
    for build in ("containers/tensorflow/build_model.py", "containers/pytorch/build_model.py"):
        subprocess.run([sys.executable, str(ROOT / build)], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="mce-local-bench-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user
    images = work / "images.yaml"
    command = ["sh", str(HERE / "nginx-container.sh")]
    images.write_text(
        json.dumps({"Images": [{"Image": "bench/nginx:*", "Backend": {"Launch": {"Command": command}}}]})
    )
    started: list[LocalSageMaker] = []
    samples: dict[tuple[str, str], list[Sample]] = {}
    try:
        one = LocalSageMaker(work, "one", images)
        started.append(one)
        many = LocalSageMaker(work, "many", images)
        started.append(many)
        print("bench: create to InService (the seed endpoint)", file=sys.stderr)
        creates = create_to_in_service(one, args.rounds)
        for local, count in ((one, 1), (many, args.endpoints)):
            sm = local.client()
            for i in range(1, count + 1):
                deploy(sm, f"e{i}", {"PrimaryContainer": {"Image": "bench/nginx:1"}})
            for i in range(1, count + 1):
                sm.get_waiter("endpoint_in_service").wait(EndpointName=f"e{i}", WaiterConfig={"Delay": 1})
        # (gateway, endpoints the requests are spread over): 1 endpoint; 50 mounted, all requests to one
        # of them (what mounting 50 costs an invocation); 50, requests to each in turn (50 pools and 50
        # containers in turn: colder caches on both sides)
        paths = {
            "1 endpoint": (one.url, one.proc.pid, 1),
            f"{args.endpoints} endpoints, requests to one": (many.url, many.proc.pid, 1),
            f"{args.endpoints} endpoints, requests to all": (many.url, many.proc.pid, args.endpoints),
        }
        for url, _, spread in paths.values():  # warm every endpoint's pool
            measure(url, "/endpoints/e%d/invocations", [], 8, 1, targets=("-", "-"), endpoints=spread)
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            for connections in (1, 32):
                for label, (url, pid, spread) in paths.items():
                    sample = measure(
                        url,
                        "/endpoints/e%d/invocations",
                        [pid],
                        connections,
                        args.seconds,
                        targets=("-", "-"),
                        endpoints=spread,
                    )
                    samples.setdefault((f"c={connections}", label), []).append(sample)
                    print(
                        f"  c={connections:<3} {label:<32} {sample.rps:8.0f} req/s  "
                        f"p50 {sample.p50_us:6.0f} us  cpu/req {sample.cpu_us:6.1f} us  "
                        f"errors {sample.errors}",
                        file=sys.stderr,
                    )
    finally:
        for local in started:
            local.stop()
        shutil.rmtree(work, ignore_errors=True)
    errors = sum(s.errors for group in samples.values() for s in group)

    def med(scenario: str, label: str, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in samples[(scenario, label)])

    n = args.endpoints
    labels = list(paths)
    lines = [
        "# The local SageMaker",
        "",
        *provenance(
            f".venv/bin/python bench/local_sagemaker.py --seconds {args.seconds:g} --rounds {args.rounds} "
            f"--endpoints {n}"
        ),
        "",
        "## create_endpoint to InService (the seed endpoint: TF Serving stand-in + TorchServe, Direct)",
        "",
        "| round | create_endpoint to the waiter's return (s) | the slower container's own start (s) |",
        "| ---: | ---: | ---: |",
        *(f"| {i + 1} | {took:.1f} | {start:.1f} |" for i, (took, start) in enumerate(creates)),
        "",
        "The waiter polls DescribeEndpoint with botocore's default 30 s delay; DescribeEndpoint waits for a",
        "Creating endpoint to settle, so the waiter returns on its first call.",
        "",
        f"## 1 endpoint against {n} on one port (~1 KiB POSTs, medians)",
        "",
        "| measure | " + " | ".join(labels) + " |",
        "| --- |" + " ---: |" * len(labels),
        "| c=1 p50 (us) | " + " | ".join(f"{med('c=1', label, 'p50_us'):.0f}" for label in labels) + " |",
        "| c=32 req/s | " + " | ".join(f"{med('c=32', label, 'rps'):.0f}" for label in labels) + " |",
        "| c=32 gateway CPU per request (us) | "
        + " | ".join(f"{med('c=32', label, 'cpu_us'):.1f}" for label in labels)
        + " |",
        "",
        "Both gateways run with --no-metrics; the containers they launch share the machine's two cores "
        "with them alike.",
    ]
    if errors:
        print("\n".join(lines), f"bench: {errors} requests failed", sep="\n", file=sys.stderr)
        return 1
    publish(lines, args.out, "local-sagemaker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
