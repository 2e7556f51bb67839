"""The seed notebook's multi-model flow, as plain boto3: nothing here knows it runs locally.

Two models uploaded under an S3 prefix, one multi-model container serving the prefix, each model
invoked by TargetModel (the first call loads it); ten more models uploaded while the endpoint runs;
100 invocations with a random TargetModel of the twelve; everything deleted. Point it at mce with
AWS_ENDPOINT_URL_SAGEMAKER, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME and AWS_ENDPOINT_URL_S3 (run.py does).

    python deploy.py BUCKET MODEL_A MODEL_B EXTRA_MODEL      (each a model.tar.gz)
"""

from __future__ import annotations

import collections
import json
import random
import sys
import time
from pathlib import Path

import boto3
from sklearn.datasets import load_digits

ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"
IMAGE = "mce/multi-model:latest"  # a multi-model server image; locally the image map knows this name
ENDPOINT = "digits-multi-model"


def main() -> None:
    bucket, first, second, extra = sys.argv[1:5]
    s3, sm, runtime = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    prefix = "multi-model/models/"
    for path in (first, second):
        s3.upload_file(path, bucket, prefix + Path(path).name)

    sm.create_model(
        ModelName=ENDPOINT,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "Mode": "MultiModel", "ModelDataUrl": f"s3://{bucket}/{prefix}"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=ENDPOINT,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": ENDPOINT,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
            }
        ],
    )
    began = time.monotonic()
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=ENDPOINT)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=ENDPOINT)
    print(f"endpoint InService in {time.monotonic() - began:.1f} s")

    digits = load_digits()
    rows, truth = digits.data[-100:].tolist(), digits.target[-100:].tolist()

    def predict(model: str, row: list[float]) -> int:
        answer = runtime.invoke_endpoint(
            EndpointName=ENDPOINT,
            TargetModel=model,
            ContentType="application/json",
            Body=json.dumps({"inputs": [row]}),
        )
        return int(json.loads(answer["Body"].read())["labels"][0])

    for model in (Path(first).name, Path(second).name):
        started = time.monotonic()
        label = predict(model, rows[0])
        print(f"{model}: label {label} (truth {truth[0]}), first call {time.monotonic() - started:.2f} s")

    copies = [f"demo-subfolder/{Path(extra).name.removesuffix('.tar.gz')}-v{i}.tar.gz" for i in range(1, 11)]
    for name in copies:
        s3.upload_file(extra, bucket, prefix + name)
    models = [Path(first).name, Path(second).name, *copies]
    print(f"{len(models)} models under s3://{bucket}/{prefix}")

    pick = random.Random(0)
    labels: collections.Counter[int] = collections.Counter()
    correct = 0
    for index in range(100):
        label = predict(pick.choice(models), rows[index])
        labels[label] += 1
        correct += label == truth[index]
    print("counts of the top label:", dict(sorted(labels.items())))
    print(f"100 invocations, accuracy {correct}/100")

    sm.delete_endpoint(EndpointName=ENDPOINT)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=ENDPOINT)
    sm.delete_endpoint_config(EndpointConfigName=ENDPOINT)
    sm.delete_model(ModelName=ENDPOINT)
    print("deleted")


if __name__ == "__main__":
    main()
