"""Invoke the echo demo endpoint with an unmodified boto3 client, as you would a SageMaker endpoint."""

import json
import sys

import boto3

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
runtime = boto3.client(
    "sagemaker-runtime",
    endpoint_url=url,
    region_name="us-east-1",
    aws_access_key_id="local",  # the gateway does not check credentials (yet); boto3 needs some to sign
    aws_secret_access_key="local",
)
for container in ("english", "french"):
    response = runtime.invoke_endpoint(
        EndpointName="echo-direct",
        TargetContainerHostname=container,
        ContentType="application/json",
        Body=json.dumps({"instances": [[1, 2, 3]]}),
    )
    print(container, "->", response["Body"].read().decode())
try:
    runtime.invoke_endpoint(EndpointName="echo-direct", TargetContainerHostname="german", Body=b"{}")
except runtime.exceptions.ValidationError as error:
    print("german ->", error)
