"""The seed blog's deploy-and-invoke flow, as plain boto3: nothing here knows it runs locally.

A TensorFlow model and a PyTorch model, their artifacts in S3 as model.tar.gz, behind one Direct-mode
multi-container endpoint of SageMaker's own TensorFlow and PyTorch inference containers (the image URIs
`sagemaker.image_uris.retrieve` gives for the blog's versions); each container invoked by its hostname
with the blog's request bodies, 28x28 images as {"instances": (N, 28, 28, 1)} and {"inputs": (N, 1, 28,
28)}; then everything deleted. Point it at mce with AWS_ENDPOINT_URL_SAGEMAKER,
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME and AWS_ENDPOINT_URL_S3 (run.py does), or at AWS.

    python deploy.py BUCKET TENSORFLOW_TAR_GZ PYTORCH_TAR_GZ TEST_JSON
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import boto3

ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"


def image_uris(region: str) -> tuple[str, str]:
    """The blog's `sagemaker.image_uris.retrieve` calls; without the SageMaker SDK, what they return."""
    try:
        from sagemaker import image_uris
    except ImportError:
        registry = f"763104351884.dkr.ecr.{region}.amazonaws.com"
        return f"{registry}/tensorflow-inference:2.3.1-cpu", f"{registry}/pytorch-inference:1.8.1-cpu-py36"
    kind = {"region": region, "instance_type": "ml.c5.4xlarge", "image_scope": "inference"}
    return (
        image_uris.retrieve(framework="tensorflow", version="2.3.1", py_version="py37", **kind),
        image_uris.retrieve(framework="pytorch", version="1.8.1", py_version="py36", **kind),
    )


def main() -> None:
    bucket, tensorflow_artifact, pytorch_artifact, test_json = sys.argv[1:5]
    s3, sm, runtime = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    tensorflow_image, pytorch_image = image_uris(sm.meta.region_name)
    s3.upload_file(tensorflow_artifact, bucket, "mnist/tensorflow/model.tar.gz")
    s3.upload_file(pytorch_artifact, bucket, "mnist/pytorch/model.tar.gz")
    pytorch_data = f"s3://{bucket}/mnist/pytorch/model.tar.gz"

    sm.create_model(
        ModelName="mnist-multi-container",
        ExecutionRoleArn=ROLE,
        Containers=[
            {
                "ContainerHostname": "tensorflow-mnist",
                "Image": tensorflow_image,
                "ModelDataUrl": f"s3://{bucket}/mnist/tensorflow/model.tar.gz",
            },
            {
                "ContainerHostname": "pytorch-mnist",
                "Image": pytorch_image,
                "ModelDataUrl": pytorch_data,
                "Environment": {
                    "SAGEMAKER_PROGRAM": "inference.py",
                    "SAGEMAKER_SUBMIT_DIRECTORY": pytorch_data,
                },
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

    test = json.loads(Path(test_json).read_text())
    images, truth = test["images"][:5], test["labels"][:5]
    bodies = {
        "tensorflow-mnist": {"instances": [[[[v] for v in row] for row in image] for image in images]},
        "pytorch-mnist": {"inputs": [[image] for image in images]},
    }
    for hostname, body in bodies.items():
        answer = runtime.invoke_endpoint(
            EndpointName="mnist-multi-container-ep",
            ContentType="application/json",
            Accept="application/json",
            TargetContainerHostname=hostname,
            Body=json.dumps(body),
        )
        result = json.loads(answer["Body"].read())
        scores = result["predictions"] if isinstance(result, dict) else result  # TF Serving's, or output_fn's
        predicted = [max(range(10), key=s.__getitem__) for s in scores]
        print(f"{hostname:>16} -> {predicted} truth: {truth} (variant {answer['InvokedProductionVariant']})")

    sm.delete_endpoint(EndpointName="mnist-multi-container-ep")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="mnist-multi-container-ep")
    sm.delete_endpoint_config(EndpointConfigName="mnist-multi-container-ep-config")
    sm.delete_model(ModelName="mnist-multi-container")
    print("deleted")


if __name__ == "__main__":
    main()
