"""A deploy test suite as a user writes one, with mce's pytest plugin: plain boto3 against the
`local_sagemaker` fixture's local SageMaker, the digits classifier of containers/pytorch (TorchServe).

    .venv/bin/python containers/pytorch/build_model.py    # build/pytorch/model-store, once
    .venv/bin/python -m pytest examples/deploy-tests      # from the repository's root

tests/test_examples.py runs it so in CI.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from sklearn.datasets import load_digits

ROLE = "arn:aws:iam::000000000000:role/deploy"
MODEL_DATA = "build/pytorch/model-store"  # relative to where pytest (and so mce up) runs


def deploy(name: str, variants: dict[str, float]) -> None:
    """The deploy code under test: one model per variant, one configuration, the endpoint, the waiter."""
    sm = boto3.client("sagemaker")
    production = []
    for variant, weight in variants.items():
        model = f"{name}-{variant}".lower()
        sm.create_model(
            ModelName=model,
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": "mce/pytorch-mnist:latest", "ModelDataUrl": MODEL_DATA},
        )
        production.append(
            {
                "VariantName": variant,
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": weight,
            }
        )
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=production)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name)


def tear_down(name: str) -> None:
    sm = boto3.client("sagemaker")
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name)


@pytest.fixture
def digits(local_sagemaker: Any) -> Iterator[str]:
    deploy("digits", {"AllTraffic": 1.0})
    yield "digits"
    tear_down("digits")


def classify(endpoint: str, pixels: list[float]) -> tuple[int, str]:
    answer = boto3.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=endpoint, ContentType="application/json", Body=json.dumps({"inputs": [pixels]})
    )
    [prediction] = json.loads(answer["Body"].read())["predictions"]
    return int(prediction["class"]), str(answer["InvokedProductionVariant"])


def test_the_endpoint_classifies_digits(digits: str) -> None:
    data = load_digits()
    right = sum(classify(digits, list(map(float, data.data[i])))[0] == data.target[i] for i in range(20))
    assert right >= 18, f"{right} of 20 digits right"


def test_traffic_splits_between_variants_by_weight(local_sagemaker: Any) -> None:
    deploy("split", {"Current": 3.0, "Candidate": 1.0})
    try:
        pixels = list(map(float, load_digits().data[0]))
        served = collections.Counter(classify("split", pixels)[1] for _ in range(60))
        assert set(served) == {"Current", "Candidate"}, served
        assert served["Current"] > served["Candidate"], served
    finally:
        tear_down("split")
