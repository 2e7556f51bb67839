"""TF Serving behind the gateway (the local stand-in over real TensorFlow), over REST and gRPC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    HERE,
    TENSORFLOW_BUILD,
    Processes,
    TfServing,
    container_doc,
    endpoint_doc,
    runtime_client,
    start_tfserving,
)

TARGETS = ("tf-rest", "tf-grpc")


def tf_doc(name: str, server: TfServing, protocol: str, **extra: Any) -> dict[str, Any]:
    url = server.grpc if protocol.endswith("grpc") else server.rest
    return container_doc(name, url, Protocol=protocol, Model=extra.pop("Model", "mnist"), **extra)


@pytest.fixture(scope="module")
def tfserving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TfServing]:
    server = start_tfserving(tmp_path_factory.mktemp("tfserving"))
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def client(module_procs: Processes, tfserving: TfServing) -> Iterator[Any]:
    bystander = module_procs.container("bystander")
    containers = [
        tf_doc("tf-rest", tfserving, "tfserving-rest"),
        tf_doc("tf-grpc", tfserving, "tfserving-grpc"),
        tf_doc("ghost-rest", tfserving, "tfserving-rest", Model="nosuch"),
        tf_doc("ghost-grpc", tfserving, "tfserving-grpc", Model="nosuch"),
        tf_doc("v1-grpc", tfserving, "tfserving-grpc", ModelVersion="1"),
        tf_doc("v1-rest", tfserving, "tfserving-rest", ModelVersion="1"),
        container_doc("bystander", bystander.url),
    ]
    gateway = module_procs.gateway(endpoint_doc("Direct", containers, name="mnist"))
    yield runtime_client(gateway.url)


def saved_model_output(rows: list[list[float]]) -> np.ndarray:
    """The SavedModel's own answer, computed in a separate process (TensorFlow stays out of this one)."""
    code = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        f"model = tf.saved_model.load({str(TENSORFLOW_BUILD / 'model' / 'mnist' / '1')!r})\n"
        "rows = np.asarray(json.load(sys.stdin), dtype=np.float32)\n"
        "out = model.signatures['serving_default'](pixels=tf.constant(rows))['probabilities'].numpy()\n"
        "print(json.dumps(out.tolist()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=120,
    )
    return np.asarray(json.loads(result.stdout.strip().splitlines()[-1]))


def sample_rows(count: int = 4) -> list[list[float]]:
    rows: list[list[float]] = np.load(TENSORFLOW_BUILD / "test-inputs.npy")[:count].tolist()
    return rows


def invoke(client: Any, target: str, body: object) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.invoke_endpoint(
        EndpointName="mnist", TargetContainerHostname=target, ContentType="application/json", Body=raw
    )
    assert response["ContentType"] == "application/json"
    return json.loads(response["Body"].read())


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return saved_model_output(sample_rows())


@pytest.mark.parametrize("target", [*TARGETS, "v1-rest", "v1-grpc"])
def test_row_format_matches_the_saved_model(client: Any, target: str, truth: np.ndarray) -> None:
    """The seed blog's payload, `{"instances": [...]}`, unchanged."""
    predictions = invoke(client, target, {"instances": sample_rows()})["predictions"]
    assert np.allclose(predictions, truth, atol=1e-6)
    assert np.argmax(predictions, axis=1).tolist() == truth.argmax(axis=1).tolist()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("form", ["bare", "named"])
def test_columnar_format(client: Any, target: str, form: str, truth: np.ndarray) -> None:
    inputs = sample_rows() if form == "bare" else {"pixels": sample_rows()}
    answer = invoke(client, target, {"inputs": inputs, "signature_name": "serving_default"})
    assert np.allclose(answer["outputs"], truth, atol=1e-6)


def test_both_protocols_give_the_same_answer(client: Any) -> None:
    body = {"instances": sample_rows(8)}
    assert invoke(client, "tf-rest", body) == invoke(client, "tf-grpc", body)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "JSON Parse error"),
        (b"{\x00\xff binary", "the body is not UTF-8 text"),  # was "'utf-16-be' codec can't decode" (#13)
        ({"instances": [[1, 2, 3]]}, "input 'pixels' has shape [1, 3]; the signature expects [?, 64]"),
        ({"instances": [["a"] * 64]}, "input 'pixels' cannot be read as DT_FLOAT"),
        ({"instances": [[1.0] * 64, [1.0] * 10]}, "input 'pixels' cannot be read as DT_FLOAT"),
        ({"pixels": []}, "Missing 'inputs' or 'instances' key"),
        (
            {"instances": [[0.0] * 64], "signature_name": "nosuch"},
            'Serving signature name: "nosuch" not found',
        ),
    ],
)
def test_bad_tensors_are_model_errors_with_tf_servings_message(
    client: Any, target: str, body: object, message: str
) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, target, body)
    error = caught.value.response
    assert error["OriginalStatusCode"] == 400
    original = error["OriginalMessage"]  # TF Serving's REST body, or the gRPC status and details
    assert message in (json.loads(original)["error"] if original.startswith("{") else original)
    assert target in error["Error"]["Message"]


@pytest.mark.parametrize("target", ["ghost-rest", "ghost-grpc"])
def test_unknown_model_is_not_found(client: Any, target: str) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, target, {"instances": sample_rows(1)})
    assert caught.value.response["OriginalStatusCode"] == 404
    assert "nosuch" in caught.value.response["OriginalMessage"]


def test_ping_reports_availability(client: Any) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(client.meta.endpoint_url + "/ping", timeout=10)
    with caught.value as error:
        report = json.loads(error.read())["containers"]
    for healthy in ("tf-rest", "tf-grpc", "v1-rest", "v1-grpc", "bystander"):
        assert report[healthy] == {"status": "Healthy"}, healthy
    assert "404" in report["ghost-rest"]["reason"]
    assert "NOT_FOUND" in report["ghost-grpc"]["reason"]


def test_wire_compatibility_with_the_official_stubs(tfserving: TfServing) -> None:
    """TF Serving's own client stubs and the gateway's stubs exchange the same bytes with the stand-in."""
    probe = str(HERE / "wire_probe.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    official = subprocess.run(
        [sys.executable, probe, "official", tfserving.grpc.removeprefix("grpc://")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    seen = json.loads(official.stdout.strip().splitlines()[-1])
    ours = subprocess.run(
        [sys.executable, probe, "gateway"],
        input=json.dumps(seen),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found = json.loads(ours.stdout)
    for request in ("predict_request", "metadata_request", "status_request"):
        assert found[request] == seen[request], request
    assert found["answer"] == {"predictions": seen["probabilities"]}
    assert found["signature_inputs"] == {"pixels": [1, [-1, 64]]}  # DT_FLOAT, [batch, 64]
    assert found["states"] == [30]  # AVAILABLE


def test_stand_in_killed_mid_test(procs: Processes, tmp_path: Path) -> None:
    server = start_tfserving(tmp_path)
    try:
        bystander = procs.container("bystander")
        gateway = procs.gateway(
            endpoint_doc(
                "Direct",
                [
                    tf_doc("tf-rest", server, "tfserving-rest"),
                    tf_doc("tf-grpc", server, "tfserving-grpc"),
                    container_doc("bystander", bystander.url),
                ],
                name="mnist",
            )
        )
        client = runtime_client(gateway.url)
        for target in TARGETS:
            assert invoke(client, target, {"instances": sample_rows(1)})["predictions"]
        server.process.stop(grace=0)
        assert server.process.leftovers() == []
        for target in TARGETS:
            with pytest.raises(client.exceptions.ModelError, match=target):
                invoke(client, target, {"instances": sample_rows(1)})
        answer = client.invoke_endpoint(EndpointName="mnist", TargetContainerHostname="bystander", Body=b"{}")
        assert json.loads(answer["Body"].read())["trail"] == ["bystander"]
    finally:
        server.process.stop()
