"""Multi-model endpoints: a model's first request (unpack or download, load) against warm ones, through the
gateway and against Multi Model Server called directly, in one run.

    .venv/bin/python bench/multimodel.py [--models 10] [--warm 500] [--out bench/results]

One MMS container (containers/multi-model/serve.py) and two gateways in front of it (`mce serve`): one
reads the models from a local prefix, the other from an S3 prefix on a local S3-compatible server (moto's
server mode), so the first request includes a download. Baselines, measured in the same run: loading a
model by calling MMS's `POST /models` directly, and invoking a loaded model with MMS's own
`POST /models/{name}/invoke`. Requests are sequential (one connection, kept alive).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from gateway.launch.ports import allocate
from gateway.launch.process import ContainerProcess

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "multi-model"
BODY = json.dumps({"inputs": [[float(v % 17) for v in range(64)]]}).encode()


class Client:
    """One kept-alive HTTP/1.1 connection; `post` returns (status, seconds)."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.gateway_times: list[
            float
        ] = []  # the gateway's own time per answer, from its Server-Timing header
        self.container_times: list[float] = []  # the container's, as the gateway saw it

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
        started = time.perf_counter()
        self.connection.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **headers}
        )
        response = self.connection.getresponse()
        response.read()
        took = time.perf_counter() - started
        timing = response.getheader("Server-Timing")
        if timing is not None:
            self.gateway_times.append(float(timing.rsplit("gateway;dur=", 1)[1]) / 1000)
            self.container_times.append(float(timing.split(";dur=", 1)[1].split(",", 1)[0]) / 1000)
        return response.status, took


def _wait_ping(port: int, exited: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if exited():
            raise SystemExit(f"{what} exited before it was ready")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} not ready within 120 s")


def _gateway(
    work: Path, name: str, mms_port: int, prefix: str, env: dict[str, str]
) -> tuple[subprocess.Popen[str], int]:
    document = {
        "EndpointName": "bench",
        "PrimaryContainer": {
            "Mode": "MultiModel",
            "ModelDataUrl": prefix,
            "Backend": {"Protocol": "sagemaker", "Url": f"http://127.0.0.1:{mms_port}"},
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    port = allocate().bind
    popen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            str(path),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--model-cache",
            str(work / f"cache-{name}"),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"{name}.log", "w"),
        text=True,
    )
    _wait_ping(port, lambda: popen.poll() is not None, f"gateway {name}")
    return popen, port


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    subprocess.run([sys.executable, str(ROOT / "containers" / "multi-model" / "build_model.py")], check=True)
    artifact = BUILD / "models" / "digits-mlp.tar.gz"
    work = Path(tempfile.mkdtemp(prefix="mce-bench-mm-"))
    prefix = work / "prefix"
    prefix.mkdir()
    names = [f"m{i:02d}.tar.gz" for i in range(args.models)]
    for name in names:
        shutil.copyfile(artifact, prefix / name)

    import boto3
    from moto.server import ThreadedMotoServer  # test dependency: a local S3-compatible server

    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3_server.start()
    s3_url = "http://{}:{}".format(*s3_server.get_host_and_port())
    credentials = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    s3.create_bucket(Bucket="models")
    for name in names:
        s3.upload_file(str(artifact), "models", f"prefix/s3-{name}")

    ports = allocate()
    mms = ContainerProcess(
        [sys.executable, str(ROOT / "containers" / "multi-model" / "serve.py")],
        env={
            **os.environ,
            **ports.environment(),
            "MCE_BIND_ADDRESS": "127.0.0.1",
            "MCE_RUN_DIR": str(work / "mms"),
        },
        log_path=work / "mms.log",
    )
    gateways = []
    try:
        _wait_ping(ports.bind, lambda: mms.returncode is not None, "MMS")
        local, local_port = _gateway(work, "local", ports.bind, str(prefix), {})
        remote, remote_port = _gateway(
            work, "s3", ports.bind, "s3://models/prefix/", {**credentials, "AWS_ENDPOINT_URL_S3": s3_url}
        )
        gateways = [local, remote]
        direct = Client(ports.bind)
        path = "/endpoints/bench/invocations"

        # baseline, interleaved with the gateway's first requests: MMS loading a model itself from a folder
        # unpacked beforehand (the same artifact), then invoking it
        unpacked = work / "unpacked"
        with tarfile.open(artifact) as tar:
            tar.extractall(unpacked, filter="data")
        results: dict[str, list[float]] = {
            "first request, local prefix": [],
            "load + first invoke, MMS directly": [],
        }
        local_client = Client(local_port)
        for i, name in enumerate(names):
            status, took = local_client.post(path, BODY, {"X-Amzn-SageMaker-Target-Model": name})
            assert status == 200, status
            results["first request, local prefix"].append(took)
            status, load = direct.post(
                "/models", json.dumps({"model_name": f"direct{i}", "url": str(unpacked)}).encode(), {}
            )
            assert status == 200, status
            status, invoke = direct.post(f"/models/direct{i}/invoke", BODY, {})
            assert status == 200, status
            results["load + first invoke, MMS directly"].append(load + invoke)
        for i in range(args.models):
            direct.connection.request("DELETE", f"/models/direct{i}")
            direct.connection.getresponse().read()
        s3_client = Client(remote_port)
        results["first request, s3 prefix"] = []
        for name in names:
            status, took = s3_client.post(path, BODY, {"X-Amzn-SageMaker-Target-Model": f"s3-{name}"})
            assert status == 200, status
            results["first request, s3 prefix"].append(took)
        gateway = Client(local_port)
        warm = []
        for i in range(args.warm):
            status, took = gateway.post(path, BODY, {"X-Amzn-SageMaker-Target-Model": names[i % len(names)]})
            assert status == 200
            warm.append(took)
        results["warm, through the gateway"] = warm
        results["warm, the gateway's own time (Server-Timing)"] = gateway.gateway_times
        results["warm, the container's time as the gateway saw it (Server-Timing)"] = gateway.container_times
        direct.connection.request("GET", "/models")
        loaded = [m["modelName"] for m in json.loads(direct.connection.getresponse().read())["models"]]
        direct_warm = []
        for i in range(args.warm):
            status, took = direct.post(f"/models/{loaded[i % len(loaded)]}/invoke", BODY, {})
            assert status == 200
            direct_warm.append(took)
        results["warm, MMS directly"] = direct_warm
    finally:
        for popen in gateways:
            popen.terminate()
            popen.wait(30)
        mms.stop()
        s3_server.stop()

    lines = [
        f"# Multi-model: first request against warm ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `.venv/bin/python bench/multimodel.py --models {args.models} --warm {args.warm}`. One "
        "Multi Model",
        "Server container (containers/multi-model), digits-mlp artifacts, sequential requests on one "
        "kept-alive",
        "connection, on this machine (2 cores). First requests include unpacking (local prefix) or "
        "downloading from",
        "a local S3-compatible server and unpacking (s3 prefix), then MMS's load and the invocation.",
        "",
        "| what | n | p50 ms | p90 ms | max ms | mean ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, values in results.items():
        lines.append(
            f"| {label} | {len(values)} | {_ms(values, 0.5):.2f} | {_ms(values, 0.9):.2f} | "
            f"{max(values) * 1000:.2f} "
            f"| {statistics.mean(values) * 1000:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"multimodel-{time.strftime('%Y-%m-%d')}.md").write_text(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
