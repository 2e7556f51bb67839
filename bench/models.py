"""The real containers of examples/mnist-direct.yaml, called directly and through the gateway (c=4).

TorchServe and the TF Serving stand-in are started as `mce up` starts them (containers/*/serve.*, ports
from a SageMaker-style allocation); the gateway fronts each over REST and over gRPC. Direct calls go to
each server's own REST API, which is what a client without the gateway would call.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.endpoint import BackendProtocol
from gateway.launch.layout import addresses
from gateway.launch.ports import allocate
from gateway.launch.process import ContainerProcess

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 4


class Launched:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.started = time.monotonic()
        self.process = ContainerProcess(argv, env=env, log_path=log)

    def rss_mb(self) -> float:
        """Resident memory of the container's whole process group (java, workers, ...)."""
        total = 0
        for pid in self.process.leftovers():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def stop(self) -> None:
        self.process.stop()


def measure_models(work: Path, args: argparse.Namespace, results: Any, measure: Callable[..., Any]) -> None:
    from overhead import INVOKE, Gateway, wait_http

    for build in ("pytorch", "tensorflow"):
        subprocess.run([sys.executable, str(ROOT / "containers" / build / "build_model.py")], check=True)
    torch_ports, tf_ports = allocate(), allocate()
    common = {**os.environ, "MCE_BIND_ADDRESS": "127.0.0.1", "MCE_PYTHON": sys.executable}
    servers = [
        Launched(
            [sys.executable, str(ROOT / "containers" / "pytorch" / "serve.py")],
            {
                **common,
                **torch_ports.environment(),
                "MCE_MODEL_DIR": str(ROOT / "build" / "pytorch" / "model-store"),
                "MCE_RUN_DIR": str(work / "torchserve"),
            },
            work / "torchserve.log",
        ),
        Launched(
            ["sh", str(ROOT / "containers" / "tensorflow" / "serve.sh")],
            {
                **common,
                **tf_ports.environment(),
                "MCE_MODEL_DIR": str(ROOT / "build" / "tensorflow" / "model"),
            },
            work / "tfserving.log",
        ),
    ]
    gateway = None
    try:

        def container(name: str, protocol: BackendProtocol, ports: Any) -> dict[str, object]:
            found = addresses(protocol, ports)
            backend = {"Protocol": protocol.value, "Model": "mnist", "Url": found.url}
            if found.management_url:
                backend["ManagementUrl"] = found.management_url
            return {"ContainerHostname": name, "Backend": backend}

        gateway = Gateway(
            work,
            "models",
            {
                "EndpointName": "bench",
                "InferenceExecutionConfig": {"Mode": "Direct"},
                "Containers": [
                    container("ts-rest", BackendProtocol.TORCHSERVE_REST, torch_ports),
                    container("ts-grpc", BackendProtocol.TORCHSERVE_GRPC, torch_ports),
                    container("tf-rest", BackendProtocol.TFSERVING_REST, tf_ports),
                    container("tf-grpc", BackendProtocol.TFSERVING_GRPC, tf_ports),
                ],
            },
        )
        cold = {
            "TorchServe": _torchserve_ready(torch_ports.extra(0), servers[0]),
            "TF": _tf_ready(tf_ports.bind, servers[1]),
        }
        wait_http(f"{gateway.url}/ping", timeout=180)  # 200 once every model can serve
        paths = {
            "TorchServe direct REST": (
                f"http://127.0.0.1:{torch_ports.bind}",
                "/predictions/mnist",
                ("-", "-"),
            ),
            "TorchServe via gateway, REST": (gateway.url, INVOKE, ("ts-rest", "ts-rest")),
            "TorchServe via gateway, gRPC": (gateway.url, INVOKE, ("ts-grpc", "ts-grpc")),
            "TF direct REST": (f"http://127.0.0.1:{tf_ports.bind}", "/v1/models/mnist:predict", ("-", "-")),
            "TF via gateway, REST": (gateway.url, INVOKE, ("tf-rest", "tf-rest")),
            "TF via gateway, gRPC": (gateway.url, INVOKE, ("tf-grpc", "tf-grpc")),
        }
        for round_ in range(args.rounds):
            print(f"models round {round_ + 1}/{args.rounds}", file=sys.stderr)
            for name, (url, path, targets) in paths.items():
                results.add(
                    "models", name, measure(url, path, [], CONNECTIONS, args.seconds, body=0, targets=targets)
                )
                results.add(
                    "models c=1", name, measure(url, path, [], 1, args.seconds, body=0, targets=targets)
                )
        for server, launched in zip(("TorchServe", "TF"), servers, strict=True):
            results.notes[f"{server} cold start to ready (s)"] = [cold[server]]
            results.notes[f"{server} container memory (MB)"] = [launched.rss_mb()]
    finally:
        if gateway is not None:
            gateway.stop()
        for server in servers:
            server.stop()


def _torchserve_ready(management: int, launched: Launched) -> float:
    """Seconds from launch until the model has a READY worker."""
    import json

    while time.monotonic() - launched.started < 180:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{management}/models/mnist", timeout=2) as response:
                if any(w["status"] == "READY" for m in json.loads(response.read()) for w in m["workers"]):
                    return time.monotonic() - launched.started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("TorchServe not ready within 180 s")


def _tf_ready(rest: int, launched: Launched) -> float:
    """Seconds from launch until the model version is AVAILABLE."""
    while time.monotonic() - launched.started < 180:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest}/v1/models/mnist", timeout=2) as response:
                if b"AVAILABLE" in response.read():
                    return time.monotonic() - launched.started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("TF Serving not ready within 180 s")
