"""Invoke the digits endpoints with boto3, exactly as you would on SageMaker (the seed blog's calls).

.venv/bin/python examples/invoke.py [URL]                 mnist-direct: each container by its hostname
.venv/bin/python examples/invoke.py --serial [URL]        mnist-serial: the whole pipeline, CSV in
.venv/bin/python examples/invoke.py --serial-triton [URL] mnist-serial-triton: the same CSV, Triton inside
"""

from __future__ import annotations

import json
import sys

import boto3
from sklearn.datasets import load_digits


def main() -> None:
    pipelines = {"--serial": "mnist-serial", "--serial-triton": "mnist-serial-triton"}
    serial = next((pipelines[a] for a in sys.argv[1:] if a in pipelines), None)
    args = [a for a in sys.argv[1:] if a not in pipelines]
    url = args[0] if args else ("http://127.0.0.1:8081" if serial else "http://127.0.0.1:8080")
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",  # boto3 signs every request; the gateway checks only with --access
        aws_secret_access_key="local",
    )
    digits = load_digits()
    images, truth = digits.data[:5], digits.target[:5].tolist()
    if serial:
        csv = "\n".join(",".join(str(int(v * 255 / 16)) for v in image) for image in images)
        response = runtime.invoke_endpoint(EndpointName=serial, ContentType="text/csv", Body=csv)
        print(f"{serial} ->", response["Body"].read().decode(), "truth:", truth)
        return
    instances = images.tolist()
    for container, key in (("tensorflow-mnist", "instances"), ("pytorch-mnist", "inputs")):
        response = runtime.invoke_endpoint(
            EndpointName="mnist-direct",
            TargetContainerHostname=container,
            ContentType="application/json",
            Body=json.dumps({key: instances}),
        )
        answer = json.loads(response["Body"].read())
        predicted = [
            max(range(10), key=p.__getitem__) if isinstance(p, list) else p["class"]
            for p in answer["predictions"]
        ]
        print(f"{container:>16} -> {predicted} truth: {truth}")
    # Triton: the Open Inference Protocol's JSON, one named tensor in, named tensors out
    tensor = {"name": "IMAGES", "shape": [len(instances), 64], "datatype": "FP32", "data": instances}
    response = runtime.invoke_endpoint(
        EndpointName="mnist-direct",
        TargetContainerHostname="triton-mnist",
        ContentType="application/json",
        Body=json.dumps({"inputs": [tensor]}),
    )
    outputs = {o["name"]: o["data"] for o in json.loads(response["Body"].read())["outputs"]}
    print(f"{'triton-mnist':>16} -> {outputs['LABELS']} truth: {truth}")


if __name__ == "__main__":
    main()
