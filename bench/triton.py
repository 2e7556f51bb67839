"""Triton (containers/triton, the tritonserver nvidia-pytriton bundles) called directly against through the
gateway, over both of the Open Inference Protocol's transports, in one run.

    direct REST     POST /v2/models/digits/infer on Triton's HTTP port (http.client, kept alive)
    direct gRPC     inference.GRPCInferenceService/ModelInfer on its gRPC port, the request prebuilt
                    (grpc, one channel): the least a client can do
    tritonclient    Triton's own clients (http and grpc), numpy in and out: what a Triton user measures
    gateway REST    POST /endpoints/triton/invocations, container kserve-v2-rest: the JSON passed through
    gateway gRPC    the same, container kserve-v2-grpc: the JSON converted to ModelInferRequest and back
    gateway binary  kserve-v2-rest with Triton's binary tensors (SageMaker's binary+json content type)

One request at a time (c=1), 5 digits per request, rounds alternating between the rows; medians and p99.
The overhead ratio is gateway p50 / direct p50 for the same transport.

    .venv/bin/python bench/triton.py [--requests 500] [--rounds 3] [--out DIR] [--smoke]
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
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from overhead import ROOT, free_port, p99
from sklearn.datasets import load_digits

from gateway._proto.kserve import inference_pb2 as pb
from gateway.launch.ports import allocate

BINARY = "application/vnd.sagemaker-triton.binary+json"


def start_triton(work: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    subprocess.run([sys.executable, str(ROOT / "containers" / "triton" / "build_model.py")], check=True)
    ports = allocate()
    env = {
        **os.environ,
        **ports.environment(),
        "MCE_MODEL_DIR": str(ROOT / "build" / "triton" / "model-repository"),
        "MCE_RUN_DIR": str(work / "triton"),
        "MCE_BIND_ADDRESS": "127.0.0.1",
    }
    log = open(work / "triton.log", "wb")  # the child keeps its own descriptor
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "containers" / "triton" / "serve.py"), "kserve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_ok(ports.bind, "/v2/models/digits/ready", proc)
    return proc, ports.bind, ports.extra(0)


def wait_ok(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=2)) as probe:
                probe.request("GET", path)
                if probe.getresponse().status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # a server this script started: nothing to wait on but its answer
    raise RuntimeError(f"127.0.0.1:{port}{path} did not answer 200 (exit status {proc.poll()})")


def http_caller(port: int, path: str, body: bytes, headers: dict[str, str]) -> Callable[[], None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call() -> None:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        answer = response.read()
        assert response.status == 200, answer

    return call


def grpc_caller(port: int, images: np.ndarray) -> Callable[[], None]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="IMAGES", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())

    def call() -> None:
        infer(request, timeout=30)

    return call


def tritonclient_caller(library: object, address: str, images: np.ndarray) -> Callable[[], None]:
    client = library.InferenceServerClient(address)  # type: ignore[attr-defined]

    def call() -> None:
        tensor = library.InferInput("IMAGES", list(images.shape), "FP32")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(images)
        result = client.infer("digits", [tensor])
        result.as_numpy("LABELS")

    return call


def timed(call: Callable[[], None], requests: int) -> list[float]:
    latencies = []
    for _ in range(requests):
        began = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - began)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="a few requests: every path answers")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.rounds = 5, 1
    work = Path(tempfile.mkdtemp(prefix="mce-bench-triton-"))
    images = load_digits().data[:5].astype(np.float32)
    tensor = {"name": "IMAGES", "shape": list(images.shape), "datatype": "FP32", "data": images.tolist()}
    body = json.dumps({"inputs": [tensor]}).encode()
    binary_input = triton_http.InferInput("IMAGES", list(images.shape), "FP32")
    binary_input.set_data_from_numpy(images, binary_data=True)
    binary_body, header_size = triton_http.InferenceServerClient.generate_request_body(
        [binary_input], outputs=[triton_http.InferRequestedOutput(n, binary_data=True) for n in ("LABELS",)]
    )
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[float]] = {}
    try:
        triton, http_port, grpc_port = start_triton(work)
        procs.append(triton)
        document = work / "endpoint.json"
        containers = [
            {"ContainerHostname": "rest", "Backend": {"Protocol": "kserve-v2-rest", "Model": "digits",
                                                       "Url": f"http://127.0.0.1:{http_port}"}},
            {"ContainerHostname": "grpc", "Backend": {"Protocol": "kserve-v2-grpc", "Model": "digits",
                                                       "Url": f"grpc://127.0.0.1:{grpc_port}"}},
        ]  # fmt: skip
        document.write_text(
            json.dumps(
                {
                    "EndpointName": "triton",
                    "Containers": containers,
                    "InferenceExecutionConfig": {"Mode": "Direct"},
                }
            )
        )
        gateway_port = free_port()
        argv = [sys.executable, "-m", "gateway", "serve", str(document), "--port", str(gateway_port)]
        gateway = subprocess.Popen([*argv, "--no-metrics"], cwd=ROOT, stdout=subprocess.DEVNULL)
        procs.append(gateway)
        wait_ok(gateway_port, "/ping", gateway)
        json_type = {"Content-Type": "application/json"}
        invocations = "/endpoints/triton/invocations"
        target = "X-Amzn-SageMaker-Target-Container-Hostname"
        rows = {
            "direct REST": http_caller(http_port, "/v2/models/digits/infer", body, json_type),
            "direct gRPC": grpc_caller(grpc_port, images),
            "tritonclient http": tritonclient_caller(triton_http, f"127.0.0.1:{http_port}", images),
            "tritonclient grpc": tritonclient_caller(triton_grpc, f"127.0.0.1:{grpc_port}", images),
            "gateway REST": http_caller(gateway_port, invocations, body, {**json_type, target: "rest"}),
            "gateway gRPC": http_caller(gateway_port, invocations, body, {**json_type, target: "grpc"}),
            "gateway binary (REST)": http_caller(
                gateway_port,
                invocations,
                binary_body,
                {"Content-Type": f"{BINARY};json-header-size={header_size}", target: "rest"},
            ),
        }
        for _ in range(args.rounds):
            for name, call in rows.items():
                timed(call, 5)  # warm the connection
                results.setdefault(name, []).extend(timed(call, args.requests))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(60)
    median = {name: statistics.median(values) for name, values in results.items()}
    lines = [
        f"# Triton directly and through the gateway ({datetime.date.today().isoformat()})",
        "",
        f"Command: `.venv/bin/python bench/triton.py --requests {args.requests} --rounds {args.rounds}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. "
        "tritonserver 2.51 (nvidia-pytriton 0.7.0's), the digits Python-backend model, 5 images per request, "
        "c=1 on a kept-alive connection, rounds alternating.",
        "",
        "| path | p50 (ms) | p99 (ms) |",
        "| --- | ---: | ---: |",
    ]
    for name, values in results.items():
        lines.append(f"| {name} | {median[name] * 1e3:.3f} | {p99(values) * 1e3:.3f} |")
    lines += [
        "",
        "| transport | overhead ratio (gateway p50 / direct p50) | added p50 (us) |",
        "| --- | ---: | ---: |",
    ]
    for transport in ("REST", "gRPC"):
        through, direct = median[f"gateway {transport}"], median[f"direct {transport}"]
        lines.append(f"| {transport} | {through / direct:.2f} | {(through - direct) * 1e6:.0f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"triton-{datetime.date.today().isoformat()}.md").write_text(report)


if __name__ == "__main__":
    main()
