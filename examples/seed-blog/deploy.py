"""The seed blog's deploy-and-invoke flow, as plain boto3: nothing here knows it runs locally.

A TensorFlow model and a PyTorch model, their artifacts in S3 as model.tar.gz, behind one Direct-mode
multi-container endpoint; each container invoked by its hostname; then everything deleted. Point it at
mce with AWS_ENDPOINT_URL_SAGEMAKER, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME and AWS_ENDPOINT_URL_S3 (run.py
does), or at AWS.

    python deploy.py BUCKET TENSORFLOW_TAR_GZ PYTORCH_TAR_GZ
"""

from __future__ import annotations

import json
import sys
import time

import boto3
from sklearn.datasets import load_digits

ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"
# what sagemaker.image_uris.retrieve would give on AWS; locally the image map knows these names
TENSORFLOW_IMAGE = "mce/tensorflow-mnist:latest"
PYTORCH_IMAGE = "mce/pytorch-mnist:latest"


def main() -> None:
    bucket, tensorflow_artifact, pytorch_artifact = sys.argv[1:4]
    s3, sm, runtime = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    s3.upload_file(tensorflow_artifact, bucket, "mnist/tensorflow/model.tar.gz")
    s3.upload_file(pytorch_artifact, bucket, "mnist/pytorch/model.tar.gz")

    sm.create_model(
        ModelName="mnist-multi-container",
        ExecutionRoleArn=ROLE,
        Containers=[
            {
                "ContainerHostname": "tensorflow-mnist",
                "Image": TENSORFLOW_IMAGE,
                "ModelDataUrl": f"s3://{bucket}/mnist/tensorflow/model.tar.gz",
            },
            {
                "ContainerHostname": "pytorch-mnist",
                "Image": PYTORCH_IMAGE,
                "ModelDataUrl": f"s3://{bucket}/mnist/pytorch/model.tar.gz",
            },
        ],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="mnist-multi-container-ep-config",
        ProductionVariants=[
            {
                "VariantName": "prod",
                "ModelName": "mnist-multi-container",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.4xlarge",
            }
        ],
    )
    began = time.monotonic()
    sm.create_endpoint(
        EndpointName="mnist-multi-container-ep", EndpointConfigName="mnist-multi-container-ep-config"
    )
    sm.get_waiter("endpoint_in_service").wait(EndpointName="mnist-multi-container-ep")
    print(f"endpoint InService in {time.monotonic() - began:.1f} s")

    digits = load_digits()
    images, truth = digits.data[:5].tolist(), digits.target[:5].tolist()
    for hostname, key in (("tensorflow-mnist", "instances"), ("pytorch-mnist", "inputs")):
        answer = runtime.invoke_endpoint(
            EndpointName="mnist-multi-container-ep",
            ContentType="application/json",
            Accept="application/json",
            TargetContainerHostname=hostname,
            Body=json.dumps({key: images}),
        )
        predictions = json.loads(answer["Body"].read())["predictions"]
        predicted = [
            max(range(10), key=p.__getitem__) if isinstance(p, list) else p["class"] for p in predictions
        ]
        print(f"{hostname:>16} -> {predicted} truth: {truth} (variant {answer['InvokedProductionVariant']})")

    sm.delete_endpoint(EndpointName="mnist-multi-container-ep")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="mnist-multi-container-ep")
    sm.delete_endpoint_config(EndpointConfigName="mnist-multi-container-ep-config")
    sm.delete_model(ModelName="mnist-multi-container")
    print("deleted")


if __name__ == "__main__":
    main()
