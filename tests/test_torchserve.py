"""A real TorchServe behind the gateway, over REST and gRPC, checked against the model's own output."""

from __future__ import annotations

import json
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    PYTORCH_BUILD,
    Processes,
    TorchServe,
    container_doc,
    endpoint_doc,
    runtime_client,
    start_torchserve,
    wait_until,
)

PROTOCOLS = ("torchserve-rest", "torchserve-grpc")


def torchserve_doc(name: str, server: TorchServe, protocol: str, model: str = "mnist") -> dict[str, Any]:
    url = server.grpc if protocol.endswith("grpc") else server.rest
    return container_doc(name, url, Protocol=protocol, Model=model, ManagementUrl=server.management)


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    server = start_torchserve(tmp_path_factory.mktemp("torchserve"))
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def client(module_procs: Processes, torchserve: TorchServe) -> Iterator[Any]:
    bystander = module_procs.container("bystander")
    containers = [
        torchserve_doc("pytorch-rest", torchserve, "torchserve-rest"),
        torchserve_doc("pytorch-grpc", torchserve, "torchserve-grpc"),
        torchserve_doc("ghost-rest", torchserve, "torchserve-rest", model="nosuch"),
        torchserve_doc("ghost-grpc", torchserve, "torchserve-grpc", model="nosuch"),
        container_doc("bystander", bystander.url),
    ]
    gateway = module_procs.gateway(endpoint_doc("Direct", containers, name="mnist"))
    yield runtime_client(gateway.url)


def expected(rows: list[list[float]]) -> np.ndarray:
    import torch

    with warnings.catch_warnings():
        # The issue asks for TorchScript; torch 2.13 deprecates loading it (in favour of torch.export).
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        model = torch.jit.load(str(PYTORCH_BUILD / "mnist.pt"))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        answer: np.ndarray[Any, Any] = model(torch.tensor(rows, dtype=torch.float32)).numpy()
    return answer


def sample_rows(count: int = 4) -> list[list[float]]:
    rows: list[list[float]] = np.load(PYTORCH_BUILD / "test-inputs.npy")[:count].tolist()
    return rows


def invoke(client: Any, target: str, body: object) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.invoke_endpoint(
        EndpointName="mnist", TargetContainerHostname=target, ContentType="application/json", Body=raw
    )
    return {"content_type": response["ContentType"], "body": json.loads(response["Body"].read())}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_predictions_match_the_model(client: Any, protocol: str, key: str) -> None:
    rows = sample_rows()
    answer = invoke(client, protocol.replace("torchserve", "pytorch"), {key: rows})
    assert answer["content_type"] == "application/json"
    predictions = answer["body"]["predictions"]
    truth = expected(rows)
    assert [p["class"] for p in predictions] == truth.argmax(axis=1).tolist()
    assert np.allclose([p["probabilities"] for p in predictions], truth, atol=2e-6)


def test_both_protocols_give_the_same_answer(client: Any) -> None:
    rows = sample_rows(8)
    rest = invoke(client, "pytorch-rest", {"inputs": rows})["body"]
    grpc = invoke(client, "pytorch-grpc", {"inputs": rows})["body"]
    assert rest == grpc


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [[1, 2, 3]]}, "row 0 must be a list of 64 numbers"),
        ({"pixels": []}, "expected 'inputs' or 'instances'"),
        (b"not json", "the body is not JSON"),
        ({"inputs": [["a"] * 64]}, "row 0 must hold only numbers"),
    ],
)
def test_malformed_payloads_are_model_errors_with_the_handler_message(
    client: Any, protocol: str, body: object, message: str
) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, protocol.replace("torchserve", "pytorch"), body)
    error = caught.value.response
    assert error["OriginalStatusCode"] == 400
    assert message in error["OriginalMessage"]
    assert protocol.replace("torchserve", "pytorch") in error["Error"]["Message"]


def test_unknown_model_over_rest_is_torchserve_404(client: Any) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, "ghost-rest", {"inputs": sample_rows(1)})
    assert caught.value.response["OriginalStatusCode"] == 404
    assert "ModelNotFoundException" in caught.value.response["OriginalMessage"]


def test_unknown_model_over_grpc(client: Any) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, "ghost-grpc", {"inputs": sample_rows(1)})
    error = caught.value.response
    assert "nosuch" in error["OriginalMessage"] or "not found" in error["OriginalMessage"].lower()
    assert error["OriginalStatusCode"] in (404, 500)


def test_oversized_payload_is_refused_by_the_gateway(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError, match="6291456"):
        invoke(client, "pytorch-rest", b"[" + b"0," * (3 * 1024 * 1024 + 1) + b"0]")


def test_ping_names_the_models_that_cannot_serve(client: Any) -> None:
    url = client.meta.endpoint_url + "/ping"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)
    with caught.value as error:
        assert error.code == 503
        report = json.loads(error.read())["containers"]
    assert report["pytorch-rest"] == {"status": "Healthy"} and report["pytorch-grpc"] == {"status": "Healthy"}
    assert report["ghost-rest"]["status"] == "Unhealthy" and "404" in report["ghost-rest"]["reason"]


def test_readiness_waits_for_a_worker(procs: Processes, torchserve: TorchServe) -> None:
    """A model registered with no worker is loaded but cannot serve: not ready, whatever /ping says."""
    register = urllib.request.Request(
        f"{torchserve.management}/models?url=mnist.mar&model_name=idle&initial_workers=0&synchronous=true",
        method="POST",
    )
    with urllib.request.urlopen(register, timeout=60) as response:
        assert response.status == 200
    gateway = procs.gateway(
        endpoint_doc("Serial", [torchserve_doc("idle", torchserve, "torchserve-grpc", model="idle")])
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(gateway.url + "/ping", timeout=10)
    with caught.value as error:
        reason = json.loads(error.read())["containers"]["idle"]["reason"]
    assert "model idle has no READY worker yet" in reason
    scale = urllib.request.Request(
        f"{torchserve.management}/models/idle?min_worker=1&synchronous=true", method="PUT"
    )
    with urllib.request.urlopen(scale, timeout=60):
        pass
    with urllib.request.urlopen(gateway.url + "/ping", timeout=10) as response:
        assert response.status == 200


def test_torchserve_killed_mid_test(procs: Processes, tmp_path: Path) -> None:
    """A second, disposable TorchServe: kill it; its containers fail clearly and the bystander serves on."""
    server = start_torchserve(tmp_path)
    try:
        bystander = procs.container("bystander")
        gateway = procs.gateway(
            endpoint_doc(
                "Direct",
                [
                    torchserve_doc("pytorch-rest", server, "torchserve-rest"),
                    torchserve_doc("pytorch-grpc", server, "torchserve-grpc"),
                    container_doc("bystander", bystander.url),
                ],
                name="mnist",
            )
        )
        client = runtime_client(gateway.url)
        assert invoke(client, "pytorch-grpc", {"inputs": sample_rows(1)})["body"]["predictions"]
        assert invoke(client, "pytorch-rest", {"inputs": sample_rows(1)})["body"]["predictions"]
        server.process.stop(grace=0)  # SIGKILL-level: no orderly shutdown
        assert server.process.leftovers() == []
        for target in ("pytorch-rest", "pytorch-grpc"):
            with pytest.raises(client.exceptions.ModelError, match=target):
                invoke(client, target, {"inputs": sample_rows(1)})
        assert json.loads(
            client.invoke_endpoint(EndpointName="mnist", TargetContainerHostname="bystander", Body=b"{}")[
                "Body"
            ].read()
        )["trail"] == ["bystander"]
    finally:
        server.process.stop()


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    server = start_torchserve(tmp_path)
    members = server.process.leftovers()
    assert len(members) >= 3  # serve.py, TorchServe's launcher, java (and its worker)
    assert server.process.stop() is not None
    assert server.process.leftovers() == []
    wait_until(lambda: not server.model_ready(), "TorchServe gone", timeout=10)
