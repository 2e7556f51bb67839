"""Multi-model containers through an unmodified boto3 client: the gateway does SageMaker's part.

The container is tests/containers/multimodel_server.py, a real server with SageMaker's multi-model API
that can hold `--capacity` models; its /stats tells how often each model was loaded and unloaded. Models
are .tar.gz artifacts under a prefix folder, written by each test. The real Multi Model Server is in
test_multimodel_mms.py.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Proc,
    Processes,
    container_doc,
    endpoint_doc,
    metric,
    multi_model_doc,
    s3_environment,
    wait_until,
    write_artifact,
)


def stats(container: Proc) -> dict[str, dict[str, int]]:
    with urllib.request.urlopen(container.url + "/stats", timeout=5) as response:
        result: dict[str, dict[str, int]] = json.loads(response.read())
    return result


def invoke(client: Any, model: str, host: str = "models", body: bytes = b'{"x": 1}') -> dict[str, Any]:
    response = client.invoke_endpoint(
        EndpointName="demo",
        TargetContainerHostname=host,
        TargetModel=model,
        Body=body,
        ContentType="application/json",
    )
    answer: dict[str, Any] = json.loads(response["Body"].read())
    return answer


def artifact(prefix: Path, model: str, **files: str) -> Path:
    return write_artifact(prefix / model, {"weights.txt": f"weights of {model}", **files})


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def serve(
    procs: Processes, prefix: Path, *, capacity: int | None = None, **multi_model: Any
) -> tuple[Proc, Proc]:
    container = procs.model_container(capacity=capacity)
    containers = [
        multi_model_doc("models", container.url, prefix, **multi_model),
        container_doc("plain", procs.container("plain").url),
    ]
    gateway = procs.gateway(endpoint_doc("Direct", containers), "--model-cache", str(procs.tmp / "cache"))
    return container, gateway


def test_first_request_loads_the_model_later_ones_hit_the_cache(
    procs: Processes, prefix: Path, clients: Any
) -> None:
    artifact(prefix, "digits.tar.gz")
    artifact(prefix, "sub/folder/other.tar.gz")
    container, gateway = serve(procs, prefix)
    client = clients(gateway.url)
    first = invoke(client, "digits.tar.gz")
    assert first["files"] == {"weights.txt": "weights of digits.tar.gz"}
    assert first["target"] == "digits.tar.gz"  # the container hears the TargetModel, for its logs
    assert first["model"] != "digits.tar.gz"  # ...and knows the model by an opaque name (spec §4.1)
    assert json.loads(first["request"]) == {"x": 1}
    for _ in range(3):
        assert invoke(client, "digits.tar.gz")["model"] == first["model"]
    assert invoke(client, "sub/folder/other.tar.gz")["files"] == {
        "weights.txt": "weights of sub/folder/other.tar.gz"
    }
    assert stats(container)["loads"] == {
        first["model"]: 1,
        invoke(client, "sub/folder/other.tar.gz")["model"]: 1,
    }
    labels = {"container": "models"}
    assert metric(gateway.url, "sagemaker_model_cache_lookups_total", **labels) == 6
    assert metric(gateway.url, "sagemaker_model_cache_hits_total", **labels) == 4
    assert metric(gateway.url, "sagemaker_loaded_model_count", **labels) == 2
    assert metric(gateway.url, "sagemaker_model_loading_seconds_count", **labels) == 2
    assert metric(gateway.url, "sagemaker_model_loading_wait_seconds_count", **labels) == 2
    # the single-model container beside it is untouched by all this
    assert client.invoke_endpoint(EndpointName="demo", TargetContainerHostname="plain", Body=b"{}")[
        "Body"
    ].read()


def test_concurrent_first_requests_load_once(procs: Processes, prefix: Path, clients: Any) -> None:
    artifact(prefix, "slow.tar.gz", **{"load.json": '{"seconds": 1}'})
    container, gateway = serve(procs, prefix)
    start = threading.Barrier(8)
    answers: list[str] = []

    def one() -> None:
        client = clients(gateway.url)
        start.wait()
        answers.append(invoke(client, "slow.tar.gz")["model"])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8 and len(set(answers)) == 1
    assert stats(container)["loads"] == {answers[0]: 1}
    assert metric(gateway.url, "sagemaker_model_loading_wait_seconds_count", container="models") == 8


def test_a_slow_load_answers_model_not_ready_and_goes_on(
    procs: Processes, prefix: Path, clients: Any
) -> None:
    artifact(prefix, "big.tar.gz", **{"load.json": '{"seconds": 2}'})
    container, gateway = serve(procs, prefix, ModelLoadWaitInSeconds=0.2)
    client = clients(gateway.url)
    with pytest.raises(client.exceptions.ModelNotReadyException) as caught:
        invoke(client, "big.tar.gz")
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert "big.tar.gz is not loaded yet" in error["Error"]["Message"]

    def loaded() -> bool:
        try:
            return bool(invoke(client, "big.tar.gz")["model"])
        except client.exceptions.ModelNotReadyException:
            return False

    wait_until(loaded, "the model loaded after ModelNotReadyException", timeout=30)
    assert list(stats(container)["loads"].values()) == [1]


def test_507_unloads_the_least_recently_used_idle_model(procs: Processes, prefix: Path, clients: Any) -> None:
    for name in ("a", "b", "c"):
        artifact(prefix, f"{name}.tar.gz")
    container, gateway = serve(procs, prefix, capacity=2)
    client = clients(gateway.url)
    names = {m: invoke(client, f"{m}.tar.gz")["model"] for m in ("a", "b")}
    invoke(client, "a.tar.gz")  # a is now used more recently than b
    names["c"] = invoke(client, "c.tar.gz")["model"]  # 507, so b goes, then c loads
    assert stats(container)["unloads"] == {names["b"]: 1}
    assert invoke(client, "b.tar.gz")["model"] == names["b"]  # and back: a is the oldest now
    assert stats(container)["unloads"] == {names["b"]: 1, names["a"]: 1}
    assert metric(gateway.url, "mce_model_unloads_total", container="models", reason="out_of_memory") == 2
    assert metric(gateway.url, "sagemaker_loaded_model_count", container="models") == 2
    log = (procs.tmp / "gateway.log").read_text()
    assert "unloaded model b.tar.gz" in log and "answered 507 (out of memory) to loading c.tar.gz" in log


def test_507_to_an_invocation_unloads_an_idle_model_and_tries_once_more(
    procs: Processes, prefix: Path, clients: Any
) -> None:
    artifact(prefix, "a.tar.gz")
    artifact(prefix, "b.tar.gz", **{"invoke.json": '{"status_once": 507}'})
    container, gateway = serve(procs, prefix)
    client = clients(gateway.url)
    a = invoke(client, "a.tar.gz")["model"]
    assert invoke(client, "b.tar.gz")["target"] == "b.tar.gz"  # 507, a is unloaded, b answers
    assert stats(container)["unloads"] == {a: 1}
    assert metric(gateway.url, "mce_model_unloads_total", container="models", reason="out_of_memory") == 1
    assert "answered 507 (out of memory) to invoking b.tar.gz" in (procs.tmp / "gateway.log").read_text()


def test_507_with_nothing_to_unload_is_a_model_error(procs: Processes, prefix: Path, clients: Any) -> None:
    artifact(prefix, "a.tar.gz")
    _, gateway = serve(procs, prefix, capacity=0)
    client = clients(gateway.url)
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, "a.tar.gz")
    assert caught.value.response["OriginalStatusCode"] == 507
    assert "System out of memory" in caught.value.response["Error"]["Message"]


def test_a_model_added_to_the_prefix_while_running(procs: Processes, prefix: Path, clients: Any) -> None:
    _, gateway = serve(procs, prefix)
    client = clients(gateway.url)
    with pytest.raises(
        client.exceptions.ValidationError, match=r"Failed to download model data for TargetModel new/m.tar.gz"
    ):
        invoke(client, "new/m.tar.gz")
    artifact(prefix, "new/m.tar.gz")
    assert invoke(client, "new/m.tar.gz")["files"] == {"weights.txt": "weights of new/m.tar.gz"}


def test_a_corrupt_artifact_is_refused_and_the_rest_keeps_serving(
    procs: Processes, prefix: Path, clients: Any
) -> None:
    artifact(prefix, "good.tar.gz")
    (prefix / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08 this is not a gzip stream")
    (prefix / "evil.tar.gz").symlink_to("/etc/hostname")  # inside the prefix by name, outside by target
    _, gateway = serve(procs, prefix)
    client = clients(gateway.url)
    with pytest.raises(
        client.exceptions.ValidationError, match=r"Failed to extract model data for TargetModel corrupt"
    ):
        invoke(client, "corrupt.tar.gz")
    with pytest.raises(client.exceptions.ValidationError, match="leads outside the model prefix"):
        invoke(client, "evil.tar.gz")
    assert list((procs.tmp / "cache" / "models").iterdir()) == []  # nothing half-made is left in the cache
    assert invoke(client, "good.tar.gz")["files"]


def test_a_model_the_container_lost_is_loaded_again(procs: Processes, prefix: Path, clients: Any) -> None:
    artifact(prefix, "m.tar.gz")
    container, gateway = serve(procs, prefix)
    client = clients(gateway.url)
    name = invoke(client, "m.tar.gz")["model"]
    # the container forgets it behind the gateway's back (as after a restart)
    request = urllib.request.Request(f"{container.url}/models/{name}", method="DELETE")
    urllib.request.urlopen(request, timeout=5).close()
    assert invoke(client, "m.tar.gz")["model"] == name
    assert stats(container)["loads"] == {name: 2}


def test_cache_disabled_unloads_after_each_request(
    procs: Processes, prefix: Path, clients: Any, tmp_path: Path
) -> None:
    artifact(prefix, "m.tar.gz")
    container = procs.model_container()
    doc = multi_model_doc("models", container.url, prefix)
    doc["MultiModelConfig"] = {"ModelCacheSetting": "Disabled"}
    gateway = procs.gateway(endpoint_doc("Direct", [doc]), "--model-cache", str(tmp_path / "cache"))
    client = clients(gateway.url)
    name = invoke(client, "m.tar.gz")["model"]
    wait_until(
        lambda: stats(container)["unloads"].get(name) == 1, "the model unloaded after its request", timeout=10
    )
    wait_until(
        lambda: not (tmp_path / "cache" / "models" / name).exists(),
        "the model deleted from the disk cache",
        timeout=10,
    )
    assert invoke(client, "m.tar.gz")["model"] == name
    assert stats(container)["loads"] == {name: 2}


def test_the_disk_cache_keeps_to_its_bound(
    procs: Processes, prefix: Path, clients: Any, tmp_path: Path
) -> None:
    for name in ("a", "b", "c"):
        artifact(prefix, f"{name}.tar.gz", **{"blob.bin": "x" * 600_000})
    _, gateway = serve(procs, prefix, capacity=1, DiskCacheInMiB=1)
    client = clients(gateway.url)
    names = {m: invoke(client, f"{m}.tar.gz")["model"] for m in ("a", "b", "c")}
    cache = tmp_path / "cache" / "models"
    # c's arrival put 1.8 MB on disk: a (not loaded) was deleted, b (loaded when c came) stayed
    assert not (cache / names["a"]).exists()
    assert (cache / names["c"]).exists()
    assert invoke(client, "a.tar.gz")["files"]["weights.txt"] == "weights of a.tar.gz"  # fetched again
    assert "deleted model a.tar.gz from the disk cache" in (procs.tmp / "gateway.log").read_text()


def test_a_pipeline_with_a_multi_model_container(procs: Processes, prefix: Path, clients: Any) -> None:
    artifact(prefix, "m.tar.gz")
    container = procs.model_container()
    steps = [container_doc(None, procs.container("first").url), multi_model_doc(None, container.url, prefix)]
    gateway = procs.gateway(
        {"EndpointName": "demo", "Containers": steps}, "--model-cache", str(procs.tmp / "cache")
    )
    client = clients(gateway.url)
    response = client.invoke_endpoint(
        EndpointName="demo", TargetModel="m.tar.gz", Body=b'{"x": 2}', ContentType="application/json"
    )
    answer = json.loads(response["Body"].read())
    assert answer["target"] == "m.tar.gz"
    assert json.loads(answer["request"])["trail"] == ["first"]  # the first container's answer, handed on
    with pytest.raises(client.exceptions.ValidationError, match="missing a target model header"):
        client.invoke_endpoint(EndpointName="demo", Body=b"{}")


def test_a_container_without_the_multi_model_api_is_unhealthy(procs: Processes, prefix: Path) -> None:
    plain = procs.container("plain")
    gateway = procs.gateway(endpoint_doc("Direct", [multi_model_doc("models", plain.url, prefix)]))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(gateway.url + "/ping", timeout=10)
    with caught.value as error:
        reason = json.loads(error.read())["containers"]["models"]["reason"]
    assert "GET /models with 404" in reason


def test_models_from_s3(procs: Processes, tmp_path: Path, s3: tuple[str, Any], clients: Any) -> None:
    url, bucket = s3
    local = artifact(tmp_path, "m.tar.gz")
    bucket.put_object(Bucket="models", Key="prefix/team/m.tar.gz", Body=local.read_bytes())
    bucket.put_object(Bucket="models", Key="elsewhere.tar.gz", Body=local.read_bytes())
    container = procs.model_container()
    doc = multi_model_doc("models", container.url, "s3://models/prefix/")
    env = s3_environment(url)
    gateway = procs.gateway(endpoint_doc("Direct", [doc]), "--model-cache", str(tmp_path / "cache"), env=env)
    client = clients(gateway.url)
    assert invoke(client, "team/m.tar.gz")["files"] == {"weights.txt": "weights of m.tar.gz"}
    assert metric(gateway.url, "sagemaker_model_downloading_seconds_count", container="models") == 1
    assert invoke(client, "team/m.tar.gz")["target"] == "team/m.tar.gz"
    assert (
        metric(gateway.url, "sagemaker_model_downloading_seconds_count", container="models") == 1
    )  # downloaded once
    with pytest.raises(
        client.exceptions.ValidationError,
        match=r"s3://models/prefix/missing.tar.gz cannot be downloaded \(NoSuchKey\)",
    ):
        invoke(client, "missing.tar.gz")
    # the prefix is the only place looked at: the object beside it is not reachable
    with pytest.raises(
        client.exceptions.ValidationError, match="must be a path relative to the model prefix"
    ):
        invoke(client, "../elsewhere.tar.gz")


def test_a_memory_budget_needs_launched_containers(procs: Processes, prefix: Path, clients: Any) -> None:
    artifact(prefix, "m.tar.gz")
    _, gateway = serve(procs, prefix, MemoryBudgetInMiB=1)  # mce serve: the container's processes are unknown
    client = clients(gateway.url)
    assert invoke(client, "m.tar.gz")["target"] == "m.tar.gz"
    assert (
        "MemoryBudgetInMiB is measured on the container's processes, which only `mce up` knows"
        in (procs.tmp / "gateway.log").read_text()
    )


def test_the_gateways_own_4xx_answers_are_counted(procs: Processes, prefix: Path, clients: Any) -> None:
    """A missing artifact (ValidationError, 400) and a slow load (ModelNotReadyException, 429) are 4XX
    answers of this container's invocations; they used to be counted as invocations with no error."""
    artifact(prefix, "big.tar.gz", **{"load.json": '{"seconds": 2}'})
    _, gateway = serve(procs, prefix, ModelLoadWaitInSeconds=0.2)
    client = clients(gateway.url)
    with pytest.raises(client.exceptions.ValidationError):
        invoke(client, "nosuch.tar.gz")
    with pytest.raises(client.exceptions.ModelNotReadyException):
        invoke(client, "big.tar.gz")
    for container in ("models", ""):
        assert metric(gateway.url, "sagemaker_invocation_4xx_errors_total", container=container) == 2
        assert metric(gateway.url, "sagemaker_invocation_5xx_errors_total", container=container) == 0
    assert (
        metric(gateway.url, "sagemaker_invocation_model_errors_total") == 0
    )  # no container answered non-2xx
