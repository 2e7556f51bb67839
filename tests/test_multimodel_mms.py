"""Multi-model endpoints with the real container: `mce up` runs Multi Model Server, boto3 invokes through the
gateway.

One endpoint, three MMS containers over one prefix of digits models: `roomy` (no limit), `tight` (a memory
budget of 1 MiB, so every load first unloads whatever is idle) and `capped` (the handler refuses a second
model with MemoryError, so MMS answers 507). Predictions are checked against a numpy reference computed
from each artifact's own weights.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import ROOT, metric, runtime_client
from test_multimodel_container import reference
from test_up import Up

MODELS = ("digits-logreg", "digits-mlp", "digits-small")
ROWS = np.random.default_rng(1).integers(0, 17, size=(3, 64)).astype(np.float64)
BUILD = ROOT / "build" / "multi-model"


class Endpoint:
    def __init__(self, run: Up, prefix: Path, unpacked: dict[str, Path]) -> None:
        self.run = run
        self.url = run.url()
        self.prefix = prefix
        self.unpacked = unpacked
        self.client = runtime_client(self.url)

    def invoke(self, host: str, model: str, rows: np.ndarray = ROWS) -> dict[str, Any]:
        response = self.client.invoke_endpoint(
            EndpointName="digits",
            TargetContainerHostname=host,
            TargetModel=model,
            ContentType="application/json",
            Body=json.dumps({"inputs": rows.tolist()}),
        )
        answer: dict[str, Any] = json.loads(response["Body"].read())
        return answer

    def check(self, host: str, artifact: str, model: str | None = None) -> None:
        """Invoke `artifact` (as TargetModel `model`) and compare with the numpy reference."""
        answer = self.invoke(host, model or f"{artifact}.tar.gz")
        np.testing.assert_allclose(answer["predictions"], reference(self.unpacked[artifact], ROWS), rtol=1e-9)

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.url, name, **labels)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    tmp = tmp_path_factory.mktemp("mms")
    subprocess.run(
        [sys.executable, str(ROOT / "containers" / "multi-model" / "build_model.py")], check=True, timeout=300
    )
    prefix = tmp / "prefix"
    prefix.mkdir()
    unpacked = {}
    for name in MODELS:
        artifact = BUILD / ("extra" if name == "digits-small" else "models") / f"{name}.tar.gz"
        shutil.copyfile(artifact, prefix / artifact.name)
        with tarfile.open(artifact) as tar:
            tar.extractall(tmp / "unpacked" / name, filter="data")
        unpacked[name] = tmp / "unpacked" / name

    def mms(name: str, **extra: Any) -> dict[str, Any]:
        backend = {
            "Protocol": "sagemaker",
            "Launch": {"Command": ["python", str(ROOT / "containers" / "multi-model" / "serve.py")]},
        }
        return {
            "ContainerHostname": name,
            "Mode": "MultiModel",
            "ModelDataUrl": str(prefix),
            "Backend": backend,
            **extra,
        }

    document = {
        "EndpointName": "digits",
        "InferenceExecutionConfig": {"Mode": "Direct"},
        "Containers": [
            mms("roomy"),
            {**mms("tight"), "Backend": {**mms("tight")["Backend"], "MultiModel": {"MemoryBudgetInMiB": 1}}},
            mms("capped", Environment={"MODEL_SERVER_MAX_MODELS": "1"}),
        ],
    }
    path = tmp / "digits.yaml"
    path.write_text(yaml.safe_dump(document))
    run = Up(path, tmp / "run")
    try:
        yield Endpoint(run, prefix, unpacked)
    finally:
        run.stop()
        run.kill()


def test_first_request_loads_later_ones_are_warm(endpoint: Endpoint) -> None:
    started = time.perf_counter()
    endpoint.check("roomy", "digits-logreg")
    first = time.perf_counter() - started
    started = time.perf_counter()
    endpoint.check("roomy", "digits-logreg")
    warm = time.perf_counter() - started
    print(
        f"[multi-model] digits-logreg through the gateway: first {first * 1000:.0f} ms (unpack + load), warm "
        f"{warm * 1000:.1f} ms"
    )
    assert endpoint.metric("sagemaker_model_cache_hits_total", container="roomy") == 1


def test_concurrent_first_requests_load_once(endpoint: Endpoint) -> None:
    loads = endpoint.metric("sagemaker_model_loading_seconds_count", container="roomy")
    start = threading.Barrier(6)
    answers: list[Any] = []

    def one() -> None:
        client = runtime_client(endpoint.url)
        start.wait()
        response = client.invoke_endpoint(
            EndpointName="digits",
            TargetContainerHostname="roomy",
            TargetModel="digits-mlp.tar.gz",
            ContentType="application/json",
            Body=json.dumps({"inputs": ROWS.tolist()}),
        )
        answers.append(json.loads(response["Body"].read())["predictions"])
        client.close()

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 6
    np.testing.assert_allclose(answers, [reference(endpoint.unpacked["digits-mlp"], ROWS)] * 6, rtol=1e-9)
    assert endpoint.metric("sagemaker_model_loading_seconds_count", container="roomy") == loads + 1


def test_a_tight_memory_budget_evicts_and_every_request_still_answers(endpoint: Endpoint) -> None:
    for artifact in [*MODELS, *MODELS]:
        endpoint.check("tight", artifact)
        assert endpoint.metric("sagemaker_loaded_model_count", container="tight") == 1
    assert endpoint.metric("mce_model_unloads_total", container="tight", reason="memory_budget") == 5
    loads = endpoint.metric("sagemaker_model_loading_seconds_count", container="tight")
    print(
        f"[multi-model] tight budget: 6 requests over 3 models: {loads:.0f} loads, 5 unloads, 1 model loaded "
        "at a time"
    )


def test_507_from_the_container_unloads_an_idle_model_and_loads(endpoint: Endpoint) -> None:
    endpoint.check("capped", "digits-logreg")
    endpoint.check(
        "capped", "digits-mlp"
    )  # 507: logreg is unloaded, MMS's refused name is cleared, mlp loads
    endpoint.check("capped", "digits-logreg")
    assert endpoint.metric("mce_model_unloads_total", container="capped", reason="out_of_memory") == 2
    assert endpoint.metric("sagemaker_loaded_model_count", container="capped") == 1


def test_a_model_added_to_the_prefix_while_running(endpoint: Endpoint) -> None:
    with pytest.raises(endpoint.client.exceptions.ValidationError, match="Failed to download model data"):
        endpoint.invoke("roomy", "demo-subfolder/digits-small-v1.tar.gz")
    (endpoint.prefix / "demo-subfolder").mkdir()
    shutil.copyfile(
        BUILD / "extra" / "digits-small.tar.gz", endpoint.prefix / "demo-subfolder" / "digits-small-v1.tar.gz"
    )
    endpoint.check("roomy", "digits-small", "demo-subfolder/digits-small-v1.tar.gz")


def test_bad_input_is_the_containers_400_and_a_corrupt_artifact_a_validation_error(
    endpoint: Endpoint,
) -> None:
    with pytest.raises(endpoint.client.exceptions.ModelError) as caught:
        endpoint.invoke("roomy", "digits-logreg.tar.gz", np.zeros((1, 3)))
    assert caught.value.response["OriginalStatusCode"] == 400
    assert "64" in caught.value.response["Error"]["Message"]
    (endpoint.prefix / "truncated.tar.gz").write_bytes(
        (BUILD / "models" / "digits-mlp.tar.gz").read_bytes()[:300]
    )
    with pytest.raises(endpoint.client.exceptions.ValidationError, match="Failed to extract model data"):
        endpoint.invoke("roomy", "truncated.tar.gz")
    with pytest.raises(endpoint.client.exceptions.ValidationError, match="relative to the model prefix"):
        endpoint.invoke("roomy", "../prefix/digits-mlp.tar.gz")
    endpoint.check("roomy", "digits-mlp")


def test_the_notebook_example(tmp_path: Path) -> None:
    """examples/multi-model.yaml and examples/multi_model.py, as docs/endpoints.md runs them."""
    run = Up(ROOT / "examples" / "multi-model.yaml", tmp_path / "run")
    try:
        url = run.url()
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "multi_model.py"), url],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        print(result.stdout)
        accuracy = int(result.stdout.split("accuracy ")[1].split("/")[0])
        assert accuracy >= 90, result.stdout
        assert "the endpoint now has 12 models" in result.stdout
        assert "cache hit ratio: " in result.stdout
        status = subprocess.run(
            [sys.executable, "-m", "gateway", "status", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
        assert status[0].split()[-3:] == ["models", "(hit", "%)"]
        assert re.search(r"^container-1\s+Healthy.*\s\d+ \(\d+\)$", status[1]), status
        assert run.stop() == 0
        assert run.leftovers() == []
    finally:
        run.kill()
