"""What data capture costs a request: one `mce up` serving two endpoints on the same nginx-made container
(bench/nginx-container.sh), one without DataCaptureConfig and one capturing every request's input and
output (100% sampling, JSON as text) into a local S3 server (moto's server mode, in this process). wrk
POSTs ~1 KiB JSON to each in turn, c=1 (added p50) and c=32 (req/s, the gateway's CPU per request,
writing to S3 included); rounds interleaved, medians. At the end, the captured objects are counted against
the requests that were answered.

    .venv/bin/python bench/capture.py [--seconds 5] [--rounds 3] [--percentage 100] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from local_sagemaker import HERE, LocalSageMaker
from overhead import Sample, measure, provenance, publish


def deploy(sm: Any, name: str, capture: dict[str, Any] | None) -> None:
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::000000000000:role/bench",
        PrimaryContainer={"Image": "bench/nginx:1"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1}],
        **({"DataCaptureConfig": capture} if capture else {}),
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--percentage", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing; bench/run installs it", file=sys.stderr)
            return 2
    from moto.server import ThreadedMotoServer

    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3_server.start()
    s3_url = "http://{}:{}".format(*s3_server.get_host_and_port())
    os.environ.update(
        AWS_ENDPOINT_URL_S3=s3_url,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    s3 = boto3.client("s3", endpoint_url=s3_url, config=Config(retries={"max_attempts": 1}))
    s3.create_bucket(Bucket="capture")
    work = Path(tempfile.mkdtemp(prefix="mce-capture-bench-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user
    images = work / "images.yaml"
    command = ["sh", str(HERE / "nginx-container.sh")]
    images.write_text(
        json.dumps({"Images": [{"Image": "bench/nginx:*", "Backend": {"Launch": {"Command": command}}}]})
    )
    capture = {
        "InitialSamplingPercentage": args.percentage,
        "DestinationS3Uri": "s3://capture/bench",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }
    samples: dict[tuple[str, str], list[Sample]] = {}
    answered = 0
    local = LocalSageMaker(work, "state", images)
    try:
        sm = local.client()
        deploy(sm, "plain", None)
        deploy(sm, "captured", capture)
        for name in ("plain", "captured"):  # warm each pool
            measure(local.url, f"/endpoints/{name}/invocations", [], 8, 1, targets=("-", "-"))
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            for connections in (1, 32):
                for name in ("plain", "captured"):
                    sample = measure(
                        local.url,
                        f"/endpoints/{name}/invocations",
                        [local.proc.pid],
                        connections,
                        args.seconds,
                        targets=("-", "-"),
                    )
                    samples.setdefault((f"c={connections}", name), []).append(sample)
                    if name == "captured":
                        answered += round(sample.rps * max(1, round(args.seconds)))
                    print(
                        f"  c={connections:<3} {name:<9} {sample.rps:8.0f} req/s  p50 {sample.p50_us:6.0f} us"
                        f"  cpu/req {sample.cpu_us:6.1f} us  errors {sample.errors}",
                        file=sys.stderr,
                    )
    finally:
        local.stop()  # SIGTERM: what is buffered is written before mce exits
    events = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="capture", Prefix="bench/captured/"):
        for item in page.get("Contents", []):
            events += s3.get_object(Bucket="capture", Key=item["Key"])["Body"].read().count(b"\n")
    s3_server.stop()
    shutil.rmtree(work, ignore_errors=True)
    errors = sum(s.errors for group in samples.values() for s in group)

    def med(scenario: str, name: str, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in samples[(scenario, name)])

    rows = [
        ("c=1 p50 (us)", "c=1", "p50_us", "{:.0f}"),
        ("c=32 req/s", "c=32", "rps", "{:.0f}"),
        ("c=32 gateway CPU per request (us)", "c=32", "cpu_us", "{:.1f}"),
    ]
    lines = [
        "# Data capture: what it costs a request",
        "",
        *provenance(
            f".venv/bin/python bench/capture.py --seconds {args.seconds:g} --rounds {args.rounds} "
            f"--percentage {args.percentage}"
        ),
        "",
        f"| measure | no capture | capture, {args.percentage}% input and output | captured / plain |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {label} | {fmt.format(med(s, 'plain', a))} | {fmt.format(med(s, 'captured', a))} | "
            f"{med(s, 'captured', a) / med(s, 'plain', a):.2f}x |"
            for label, s, a, fmt in rows
        ),
        "",
        f"Events written to S3 for the captured endpoint: {events} (wrk answered about {answered} in the "
        "measured windows, plus the warm-up's).",
    ]
    if errors:
        print("\n".join(lines), f"bench: {errors} requests failed", sep="\n", file=sys.stderr)
        return 1
    publish(lines, args.out, "capture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
