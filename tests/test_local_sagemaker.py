"""`mce up` as a local SageMaker: an unmodified boto3 `sagemaker` client deploys, `sagemaker-runtime`
invokes, on one port. Containers are real processes (examples/containers/echo.py) started from an image
map, as CreateModel's `Image` names them."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import (
    ROOT,
    Proc,
    aws_client,
    metric,
    runtime_client,
    s3_environment,
    start_process,
    wait_until,
    write_artifact,
)

ECHO = ROOT / "examples" / "containers" / "echo.py"
BIDI = ROOT / "examples" / "containers" / "bidi_echo.py"
READER = ROOT / "tests" / "containers" / "model_reader.py"
STREAM = ROOT / "tests" / "containers" / "stream_server.py"
ROLE = "arn:aws:iam::000000000000:role/local"
# a container that starts serving (as echo.py) only once its gate file exists: the test holds it Creating
GATED = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.05)\n"
    "os.execv(sys.executable, [sys.executable, sys.argv[2], 'gated'])"
)
STUBBORN = (  # an echo container that outlives SIGTERM until the file `sys.argv[1]` exists
    "import os, runpy, signal, sys, threading, time\n"
    "gate, echo = sys.argv[1], sys.argv[2]\n"
    "def held(*_):\n"
    "    def wait():\n"
    "        while not os.path.exists(gate):\n"
    "            time.sleep(0.05)\n"
    "        os._exit(0)\n"
    "    threading.Thread(target=wait, daemon=True).start()\n"
    "signal.signal(signal.SIGTERM, held)\n"
    "sys.path.insert(0, os.path.dirname(echo))\n"
    "sys.argv = [echo, 'stubborn']\n"
    "runpy.run_path(echo, run_name='__main__')"
)


def image_map(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "Images": [
                    {
                        "Image": "test/echo:*",
                        "Backend": {
                            "Protocol": "sagemaker",
                            "Launch": {"Command": ["python", str(ECHO), "echo"]},
                        },
                    },
                    {
                        "Image": "test/french:*",
                        "Backend": {
                            "Protocol": "sagemaker",
                            "Launch": {"Command": ["python", str(ECHO), "french"]},
                        },
                    },
                    {  # healthy only once the test creates the file `gate` next to the map
                        "Image": "test/gated:*",
                        "Backend": {
                            "Protocol": "sagemaker",
                            "Launch": {
                                "Command": ["python", "-c", GATED, str(path.parent / "gate"), str(ECHO)]
                            },
                        },
                    },
                    {  # stops on SIGTERM only once the test creates the file `let-go` next to the map
                        "Image": "test/stubborn:*",
                        "Backend": {
                            "Protocol": "sagemaker",
                            "Launch": {
                                "Command": ["python", "-c", STUBBORN, str(path.parent / "let-go"), str(ECHO)]
                            },
                        },
                    },
                    {  # a WebSocket for bidirectional streams (examples/containers/bidi_echo.py)
                        "Image": "test/bidi:*",
                        "Backend": {"Protocol": "sagemaker", "Launch": {"Command": ["python", str(BIDI)]}},
                    },
                    {  # streams JSON lines (tests/containers/stream_server.py)
                        "Image": "test/stream:*",
                        "Backend": {"Protocol": "sagemaker", "Launch": {"Command": ["python", str(STREAM)]}},
                    },
                    {
                        "Image": "test/reader:*",
                        "Backend": {"Protocol": "sagemaker", "Launch": {"Command": ["python", str(READER)]}},
                    },
                    {
                        "Image": "test/broken:*",
                        "Backend": {
                            "Protocol": "sagemaker",
                            "Launch": {
                                "Command": [
                                    "python",
                                    "-c",
                                    "import sys; print('cannot find /opt/ml/model/weights.bin', flush=True); "
                                    "sys.exit(3)",
                                ]
                            },
                        },
                    },
                ]
            }
        )
    )
    return path


class LocalSageMaker:
    """`mce up` with no document, on a port the OS chose, its state in `state`."""

    def __init__(
        self, tmp: Path, state: Path | None = None, env: dict[str, str] | None = None, *extra: str
    ) -> None:
        self.state = state or tmp / "state"
        self.log = tmp / "mce.log"
        images = image_map(tmp / "images.yaml")
        argv = [sys.executable, "-m", "gateway", "up", "--port", "0", "--state", str(self.state)]
        argv += ["--data-root", str(tmp)]  # the test's own files may be model data
        self.proc: Proc = start_process([*argv, "--images", str(images), *extra], stderr=self.log, env=env)
        self.url = self.proc.url

    def sagemaker(self, key: tuple[str, str] = ("AKIDTEST", "secret")) -> Any:
        config = Config(retries={"max_attempts": 1}, read_timeout=70, connect_timeout=5)
        return aws_client("sagemaker", self.url, key=key, config=config)

    def runtime(self) -> Any:
        return runtime_client(self.url)

    def stop(self) -> int:
        return self.proc.terminate(timeout=60)

    def __enter__(self) -> LocalSageMaker:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """SIGTERM (mce stops every container it started), SIGKILL if that fails; a clean exit is asserted
        unless the test already failed."""
        try:
            code = self.stop()
        finally:
            self.proc.kill()
        assert kind is not None or code == 0, f"mce up exited with {code}"


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalSageMaker]:
    server = LocalSageMaker(tmp_path)
    yield server
    try:  # SIGTERM: mce stops every container it started (SIGKILL would orphan them)
        server.stop()
    finally:
        server.proc.kill()


def deploy_model(
    sm: Any,
    name: str,
    *,
    primary: dict[str, Any] | None = None,
    containers: list[dict[str, Any]] | None = None,
    mode: str = "Direct",
) -> dict[str, Any]:
    """Model, configuration (one variant, AllTraffic) and endpoint, all named `name`: one container
    (`primary`) or several in `mode`. Returns DescribeEndpoint once the endpoint has settled."""
    if primary is not None:
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=primary)
    else:
        sm.create_model(
            ModelName=name,
            ExecutionRoleArn=ROLE,
            Containers=containers,
            InferenceExecutionConfig={"Mode": mode},
        )
    sm.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name}]
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return settled(sm, name)


def settled(sm: Any, name: str) -> dict[str, Any]:
    """DescribeEndpoint once the endpoint is no longer Creating (mce holds each answer while it changes)."""
    while True:
        described = dict(sm.describe_endpoint(EndpointName=name))
        if described["EndpointStatus"] != "Creating":
            return described


def in_service(sm: Any, name: str) -> dict[str, Any]:
    """DescribeEndpoint once boto3's endpoint_in_service waiter has seen InService."""
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return dict(sm.describe_endpoint(EndpointName=name))


def deploy(
    sm: Any, name: str, *variants: tuple[str, str, float], containers: list[dict[str, Any]] | None = None
) -> None:
    """Model(s), configuration and endpoint `name`: each variant (name, image, weight) has its own model."""
    production = []
    for variant, image, weight in variants:
        model = f"{name}-{variant}".lower()
        if containers is None:
            sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
        else:
            sm.create_model(
                ModelName=model,
                ExecutionRoleArn=ROLE,
                Containers=containers,
                InferenceExecutionConfig={"Mode": "Direct"},
            )
        production.append(
            {
                "VariantName": variant,
                "ModelName": model,
                "InitialInstanceCount": 2,  # locally one replica runs (README)
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": weight,
            }
        )
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=production)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def test_the_seed_flow_create_wait_invoke_delete(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    sm.create_model(
        ModelName="seed",
        ExecutionRoleArn=ROLE,
        Containers=[
            {"ContainerHostname": "english", "Image": "test/echo:1"},
            {"ContainerHostname": "french", "Image": "test/french:1"},
        ],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="seed-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "seed",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.c5.large",
            }
        ],
    )
    arn = sm.create_endpoint(EndpointName="seed", EndpointConfigName="seed-config")["EndpointArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:000000000000:endpoint/seed"
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="seed", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    described = sm.describe_endpoint(EndpointName="seed")
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == "seed-config"
    [variant] = described["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic" and variant["CurrentInstanceCount"] == 1
    assert [image["SpecifiedImage"] for image in variant["DeployedImages"]] == [
        "test/echo:1",
        "test/french:1",
    ]

    for hostname, container in (("english", "echo"), ("french", "french")):
        answer = runtime.invoke_endpoint(
            EndpointName="seed",
            Body=b'{"x": 1}',
            ContentType="application/json",
            TargetContainerHostname=hostname,
        )
        assert json.loads(answer["Body"].read()) == {"container": container, "request": {"x": 1}}
        assert answer["InvokedProductionVariant"] == "AllTraffic"

    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["seed"]
    assert sm.describe_model(ModelName="seed")["Containers"][1]["ContainerHostname"] == "french"
    sm.delete_endpoint(EndpointName="seed")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="seed", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    with pytest.raises(ClientError) as gone:
        runtime.invoke_endpoint(EndpointName="seed", Body=b"{}", TargetContainerHostname="english")
    assert gone.value.response["Error"]["Code"] == "ValidationError"
    sm.delete_endpoint_config(EndpointConfigName="seed-config")
    sm.delete_model(ModelName="seed")
    assert sm.list_models()["Models"] == []
    leftovers = subprocess.run(["pgrep", "-f", str(ECHO)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "the endpoint's containers are still running after DeleteEndpoint"


def test_variants_split_by_weight_and_target_variant_picks_one(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(
        sm,
        "split",
        ("blue", "test/echo:1", 1.0),
        ("green", "test/french:1", 1.0),
        ("dark", "test/echo:2", 0.0),
    )
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="split", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    variants = sm.describe_endpoint(EndpointName="split")["ProductionVariants"]
    assert {v["VariantName"]: v["CurrentWeight"] for v in variants} == {
        "blue": 1.0,
        "green": 1.0,
        "dark": 0.0,
    }
    assert {v["CurrentInstanceCount"] for v in variants} == {1}  # InitialInstanceCount 2: one runs
    seen: dict[str, int] = {}
    for _ in range(200):
        answer = runtime.invoke_endpoint(EndpointName="split", Body=b"{}")
        variant = answer["InvokedProductionVariant"]
        seen[variant] = seen.get(variant, 0) + 1
        expected = {"blue": "echo", "green": "french"}[variant]
        assert json.loads(answer["Body"].read())["container"] == expected
    # 200 fair coin flips: fewer than 60 of one side happens with probability below 1e-8
    assert set(seen) == {"blue", "green"} and min(seen.values()) >= 60, seen
    answer = runtime.invoke_endpoint(EndpointName="split", Body=b"{}", TargetVariant="dark")
    assert answer["InvokedProductionVariant"] == "dark"
    assert json.loads(answer["Body"].read())["container"] == "echo"  # read: its connection goes back
    with pytest.raises(ClientError) as unknown:
        runtime.invoke_endpoint(EndpointName="split", Body=b"{}", TargetVariant="purple")
    assert unknown.value.response["Error"]["Code"] == "ValidationError"
    assert "'blue', 'green', 'dark'" in unknown.value.response["Error"]["Message"]


def test_a_container_that_cannot_start_fails_the_endpoint_with_its_last_words(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "broken", ("AllTraffic", "test/broken:1", 1.0))
    with pytest.raises(Exception, match="Failed"):
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="broken", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    described = sm.describe_endpoint(EndpointName="broken")
    assert described["EndpointStatus"] == "Failed"
    assert "exited with code 3" in described["FailureReason"]
    assert "cannot find /opt/ml/model/weights.bin" in described["FailureReason"]
    with pytest.raises(ClientError) as refused:
        runtime.invoke_endpoint(EndpointName="broken", Body=b"{}")
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "Failed" in refused.value.response["Error"]["Message"]


def test_an_image_nobody_knows_fails_naming_both_ways_to_run_it(local: LocalSageMaker) -> None:
    sm = local.sagemaker()
    deploy(sm, "mystery", ("AllTraffic", "123456789012.dkr.ecr.us-east-1.amazonaws.com/mystery:7", 1.0))
    described = sm.describe_endpoint(EndpointName="mystery")
    assert described["EndpointStatus"] == "Failed"
    reason = described["FailureReason"]
    assert "mystery:7" in reason and "--images" in reason and "Docker" in reason


def test_every_refusal_has_the_class_botocore_maps(local: LocalSageMaker) -> None:
    sm = local.sagemaker()
    sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    with pytest.raises(ClientError) as duplicate:
        sm.create_model(ModelName="M", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    assert duplicate.value.response["Error"]["Code"] == "ValidationException"
    assert duplicate.value.response["Error"]["Message"] == (
        'Cannot create already existing model "arn:aws:sagemaker:us-east-1:000000000000:model/m".'
    )
    with pytest.raises(ClientError) as rules:  # the endpoint document's rules: Direct needs hostnames
        sm.create_model(
            ModelName="nameless",
            ExecutionRoleArn=ROLE,
            Containers=[{"Image": "test/echo:1"}, {"Image": "test/echo:1"}],
            InferenceExecutionConfig={"Mode": "Direct"},
        )
    assert rules.value.response["Error"]["Code"] == "ValidationException"
    assert "ContainerHostname" in rules.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as missing:
        sm.create_endpoint_config(
            EndpointConfigName="c", ProductionVariants=[{"VariantName": "v", "ModelName": "nope"}]
        )
    assert missing.value.response["Error"]["Message"] == (
        'Could not find model "arn:aws:sagemaker:us-east-1:000000000000:model/nope".'
    )
    with pytest.raises(ClientError) as no_config:
        sm.create_endpoint(EndpointName="e", EndpointConfigName="nope")
    assert no_config.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as no_endpoint:
        sm.describe_endpoint(EndpointName="nope")
    assert no_endpoint.value.response["Error"]["Message"] == (
        'Could not find endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/nope".'
    )
    # botocore checks its input before sending; the server checks it again against the same model (a
    # member of the wrong JSON type cannot be read at all: SerializationException, as AWS answers it)
    for body, code in (
        (b"{}", "ValidationException"),
        (b'{"EndpointName": 7}', "SerializationException"),
        (b"not json", "SerializationException"),
    ):
        status, answer = control_call(local.url, "DescribeEndpoint", body)
        assert (status, answer["__type"]) == (400, code), answer
    with socket.create_connection(("127.0.0.1", local.proc.port), timeout=30) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: SageMaker.CreateModel\r\n"
            b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 7000000\r\n\r\n"
        )
        head, _, refused = sock.recv(65536).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and json.loads(refused)["__type"] == "ValidationError"
    status, answer = control_call(local.url, "CreateTrainingJob", b"{}")
    assert (status, answer["__type"]) == (400, "UnknownOperationException")
    assert "CreateEndpoint" in answer["message"]


def control_call(url: str, operation: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """A control-plane request as raw HTTP: AWS JSON 1.1, X-Amz-Target."""
    request = urllib.request.Request(
        url + "/",
        data=body,
        method="POST",
        headers={"X-Amz-Target": f"SageMaker.{operation}", "Content-Type": "application/x-amz-json-1.1"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            assert error.headers["Content-Type"] == "application/x-amz-json-1.1"
            return error.code, json.loads(error.read())


def test_lists_page_and_sort_as_sagemaker_does(local: LocalSageMaker) -> None:
    sm = local.sagemaker()
    for i in range(12):
        sm.create_model(
            ModelName=f"model-{i:02d}", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"}
        )
    first = sm.list_models(MaxResults=5, SortBy="Name", SortOrder="Ascending")
    assert [m["ModelName"] for m in first["Models"]] == [f"model-{i:02d}" for i in range(5)]
    names = [
        m["ModelName"]
        for page in sm.get_paginator("list_models").paginate(PaginationConfig={"PageSize": 5})
        for m in page["Models"]
    ]
    assert names == [f"model-{i:02d}" for i in reversed(range(12))]  # newest first by default
    assert [m["ModelName"] for m in sm.list_models(NameContains="-1")["Models"]] == ["model-11", "model-10"]


def test_endpoints_in_service_come_back_when_mce_up_starts_again(tmp_path: Path) -> None:
    first = LocalSageMaker(tmp_path)
    try:
        deploy(first.sagemaker(), "durable", ("AllTraffic", "test/echo:1", 1.0))
        first.sagemaker().get_waiter("endpoint_in_service").wait(
            EndpointName="durable", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
    finally:
        assert first.stop() == 0
    second = LocalSageMaker(tmp_path, state=first.state)
    try:
        sm = second.sagemaker()
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="durable", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        answer = second.runtime().invoke_endpoint(EndpointName="durable", Body=b'{"again": true}')
        assert json.loads(answer["Body"].read()) == {"container": "echo", "request": {"again": True}}
        assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["durable-alltraffic"]
    finally:
        assert second.stop() == 0


def test_concurrent_creates_each_get_their_own_answer(local: LocalSageMaker) -> None:
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            local.sagemaker().create_model(
                ModelName="same", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"}
            )
        except ClientError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 7  # one created it; every other call was told it exists
    assert [m["ModelName"] for m in local.sagemaker().list_models()["Models"]] == ["same"]


def second_config(sm: Any, name: str, image: str) -> str:
    """Another model and configuration for endpoint `name`, to update it to."""
    sm.create_model(ModelName=f"{name}-next", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-next",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": f"{name}-next", "InitialInstanceCount": 1}
        ],
    )
    return f"{name}-next"


class Load:
    """Threads invoking endpoint `name` without pause; every answer's container, every failure."""

    def __init__(self, local: LocalSageMaker, name: str, threads: int = 4) -> None:
        self.answers: list[str] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()

        def run() -> None:
            runtime = local.runtime()
            while not self._stop.is_set():
                try:
                    answer = runtime.invoke_endpoint(EndpointName=name, Body=b'{"n": 1}')
                    self.answers.append(json.loads(answer["Body"].read())["container"])
                except Exception as exc:
                    self.failures.append(exc)

        self._threads = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_an_update_under_load_moves_traffic_with_no_failed_request(local: LocalSageMaker) -> None:
    sm = local.sagemaker()
    deploy(sm, "live", ("AllTraffic", "test/echo:1", 1.0))
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="live", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    config = second_config(sm, "live", "test/french:1")
    load = Load(local, "live")
    try:
        wait_until(lambda: len(load.answers) >= 50, "answers before the update")
        sm.update_endpoint(EndpointName="live", EndpointConfigName=config)
        assert sm.describe_endpoint(EndpointName="live")["EndpointStatus"] in ("Updating", "InService")
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="live", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        done = len(load.answers)
        wait_until(lambda: len(load.answers) >= done + 50, "answers after the update")
    finally:
        load.stop()
    assert load.failures == []
    assert load.answers[0] == "echo" and set(load.answers[done:]) == {"french"}
    described = sm.describe_endpoint(EndpointName="live")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", config)
    assert "FailureReason" not in described


def test_an_update_that_never_gets_healthy_rolls_back(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "steady", ("AllTraffic", "test/echo:1", 1.0))
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="steady", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    config = second_config(sm, "steady", "test/broken:1")
    sm.update_endpoint(EndpointName="steady", EndpointConfigName=config)
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="steady", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    described = sm.describe_endpoint(EndpointName="steady")
    assert described["EndpointConfigName"] == "steady-config"  # the old configuration still serves
    assert "rolled back" in described["FailureReason"] and "exited with code 3" in described["FailureReason"]
    answer = runtime.invoke_endpoint(EndpointName="steady", Body=b"{}")
    assert json.loads(answer["Body"].read())["container"] == "echo"
    with pytest.raises(ClientError) as busy:
        sm.update_endpoint(EndpointName="nope", EndpointConfigName=config)
    assert busy.value.response["Error"]["Code"] == "ValidationException"


def test_model_data_from_s3_a_file_and_a_folder(tmp_path: Path, s3: tuple[str, Any]) -> None:
    """ModelDataUrl as SageMaker has it (a .tar.gz in S3, here a local S3 server), and the local forms."""
    url, bucket = s3
    archive = write_artifact(tmp_path / "model.tar.gz", {"answer.txt": "from s3"})
    bucket.put_object(Bucket="models", Key="team/model.tar.gz", Body=archive.read_bytes())
    write_artifact(tmp_path / "local.tar.gz", {"answer.txt": "from a file"})
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "answer.txt").write_text("from a folder")
    env = s3_environment(url)
    local = LocalSageMaker(tmp_path, env=env)
    try:
        sm, runtime = local.sagemaker(), local.runtime()
        sources = {
            "s3": "s3://models/team/model.tar.gz",
            "file": f"file://{tmp_path / 'local.tar.gz'}",
            "folder": str(tmp_path / "folder"),
            "missing": "s3://models/team/nothing.tar.gz",
        }
        for name, source in sources.items():
            sm.create_model(
                ModelName=name,
                ExecutionRoleArn=ROLE,
                PrimaryContainer={"Image": "test/reader:1", "ModelDataUrl": source},
            )
            sm.create_endpoint_config(
                EndpointConfigName=name, ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name}]
            )
            sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        for name, text in (("s3", "from s3"), ("file", "from a file"), ("folder", "from a folder")):
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
            assert runtime.invoke_endpoint(EndpointName=name, Body=b"{}")["Body"].read() == text.encode()
        described = sm.describe_endpoint(EndpointName="missing")
        assert described["EndpointStatus"] == "Failed"
        assert "s3://models/team/nothing.tar.gz cannot be downloaded" in described["FailureReason"]
    finally:
        assert local.stop() == 0


def test_one_metrics_page_covers_every_endpoint_and_variant(local: LocalSageMaker) -> None:
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "first", ("AllTraffic", "test/echo:1", 1.0))
    deploy(sm, "second", ("blue", "test/echo:1", 1.0), ("green", "test/french:1", 0.0))
    for name in ("first", "second"):
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    for _ in range(3):
        runtime.invoke_endpoint(EndpointName="first", Body=b"{}")
    runtime.invoke_endpoint(EndpointName="second", Body=b"{}")
    runtime.invoke_endpoint(EndpointName="second", Body=b"{}", TargetVariant="green")
    counts = {
        (endpoint, variant): metric(
            local.url, "sagemaker_invocations_total", endpoint=endpoint, variant=variant, container=""
        )
        for endpoint, variant in (("first", "AllTraffic"), ("second", "blue"), ("second", "green"))
    }
    assert counts == {("first", "AllTraffic"): 3, ("second", "blue"): 1, ("second", "green"): 1}


def test_a_model_error_names_the_containers_log(local: LocalSageMaker) -> None:
    """LogStreamArn in SageMaker's form, and the message leads to the log itself, kept locally under
    that name."""
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "logged", ("AllTraffic", "test/echo:1", 1.0))
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="logged", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    with pytest.raises(ClientError) as failed:
        runtime.invoke_endpoint(EndpointName="logged", Body=b"not json")
    error = failed.value.response
    assert error["Error"]["Code"] == "ModelError" and error["OriginalStatusCode"] == 400
    stream = "AllTraffic/local-1/container-1"
    assert error["LogStreamArn"] == (
        f"arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/logged:log-stream:{stream}"
    )
    log = Path(error["Error"]["Message"].split("Its log: ", 1)[1])
    assert log == local.state / "_logs" / "aws" / "sagemaker" / "Endpoints" / "logged" / stream
    assert "echo listening on" in log.read_text()


def test_with_metrics_off_the_metrics_page_says_so(tmp_path: Path) -> None:
    local = LocalSageMaker(tmp_path, None, None, "--no-metrics")
    try:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(local.url + "/metrics", timeout=10)
        with caught.value:
            assert caught.value.code == 404
            assert caught.value.headers["x-amzn-ErrorType"].startswith("UnknownOperationException")
            assert json.loads(caught.value.read()) == {"Message": "Metrics are off (mce up --no-metrics)."}
    finally:
        assert local.stop() == 0


def test_mce_status_shows_every_endpoint_its_variants_and_containers(local: LocalSageMaker) -> None:
    sm = local.sagemaker()
    deploy(sm, "shown", ("blue", "test/echo:1", 3.0), ("green", "test/french:1", 1.0))
    deploy(sm, "doomed", ("AllTraffic", "test/broken:1", 1.0))
    for name in ("shown", "doomed"):
        with contextlib.suppress(Exception):  # doomed fails; its waiter says so
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
    local.runtime().invoke_endpoint(EndpointName="shown", Body=b"{}")
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "status", local.url], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    assert rows[0][:5] == ["endpoint", "status", "variant", "weight", "container"]
    assert ["doomed", "Failed"] == rows[1][:2]
    assert ["shown", "InService", "blue", "3", "container-1"] == rows[2][:5]
    assert ["shown", "InService", "green", "1", "container-1"] == rows[3][:5]


def test_access_covers_the_control_plane_with_iam_actions(tmp_path: Path) -> None:
    """--access: each control-plane operation is `sagemaker:<Operation>` on the ARN it names; unsigned
    calls are refused before any operation runs."""
    arn = "arn:aws:sagemaker:us-east-1:111122223333"
    team = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sagemaker:*",
                "Resource": [f"{arn}:model/team-*", f"{arn}:endpoint-config/team-*"],
            },
            {"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"},
        ],
    }
    access = tmp_path / "access.yaml"
    access.write_text(
        yaml.safe_dump(
            {
                "Account": "111122223333",
                "Keys": [
                    {
                        "AccessKeyId": "AKIDTEAM",
                        "SecretAccessKey": "team-secret",
                        "Name": "team",
                        "Policy": team,
                    }
                ],
            }
        )
    )
    local = LocalSageMaker(tmp_path, None, None, "--access", str(access))
    try:
        sm = local.sagemaker(("AKIDTEAM", "team-secret"))
        assert (
            sm.create_model(
                ModelName="team-m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"}
            )["ModelArn"]
            == f"{arn}:model/team-m"
        )
        assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["team-m"]
        with pytest.raises(ClientError) as denied:
            sm.create_model(
                ModelName="other", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"}
            )
        error = denied.value.response["Error"]
        assert error["Code"] == "AccessDeniedException"
        assert error["Message"] == (
            "User: arn:aws:iam::111122223333:user/team is not authorized to perform: sagemaker:CreateModel "
            f"on resource: {arn}:model/other because no identity-based policy allows the "
            "sagemaker:CreateModel action"
        )
        with pytest.raises(ClientError) as no_endpoints:
            sm.create_endpoint(EndpointName="team-e", EndpointConfigName="team-c")
        assert no_endpoints.value.response["Error"]["Code"] == "AccessDeniedException"
        with pytest.raises(ClientError) as stranger:
            local.sagemaker(("AKIDWHO", "nope")).list_models()
        assert stranger.value.response["Error"]["Code"] == "UnrecognizedClientException"
        status, answer = control_call(local.url, "ListModels", b"{}")
        assert (status, answer["__type"]) == (403, "MissingAuthenticationTokenException")
    finally:
        assert local.stop() == 0


def test_the_endpoints_of_documents_are_listed_and_described(tmp_path: Path) -> None:
    """`mce up DOC` starts the document's endpoint in the local SageMaker: DescribeEndpoint and
    ListEndpoints show it; the API does not delete it; a created endpoint cannot take its name."""
    document = tmp_path / "doc.yaml"
    document.write_text(
        yaml.safe_dump(
            {
                "EndpointName": "from-doc",
                "PrimaryContainer": {
                    "Image": "python:3.11-slim",
                    "Backend": {"Protocol": "sagemaker", "Launch": {"Command": ["python", str(ECHO), "doc"]}},
                },
            }
        )
    )
    local = LocalSageMaker(tmp_path, None, None, str(document))
    try:
        sm, runtime = local.sagemaker(), local.runtime()
        described = sm.describe_endpoint(EndpointName="from-doc")
        assert described["EndpointStatus"] == "InService"
        assert described["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == "python:3.11-slim"
        assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["from-doc"]
        with pytest.raises(ClientError) as kept:
            sm.delete_endpoint(EndpointName="from-doc")
        assert "endpoint document" in kept.value.response["Error"]["Message"]
        sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
        sm.create_endpoint_config(
            EndpointConfigName="c", ProductionVariants=[{"VariantName": "v", "ModelName": "m"}]
        )
        with pytest.raises(ClientError) as taken:
            sm.create_endpoint(EndpointName="from-doc", EndpointConfigName="c")
        assert taken.value.response["Error"]["Message"].startswith("Cannot create already existing endpoint")
        answer = runtime.invoke_endpoint(EndpointName="from-doc", Body=b"{}")
        assert json.loads(answer["Body"].read())["container"] == "doc"
    finally:
        assert local.stop() == 0


def test_deletes_while_an_endpoint_is_being_created_as_aws_treats_them(
    local: LocalSageMaker, tmp_path: Path
) -> None:
    """DeleteEndpoint is refused until the endpoint leaves Creating; its configuration and model may go at
    once (the deployment already holds what it needs), and the endpoint still comes up from them."""
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "gated", ("AllTraffic", "test/gated:1", 1.0))
    with pytest.raises(ClientError) as creating:
        sm.delete_endpoint(EndpointName="gated")
    error = creating.value.response["Error"]
    assert error["Code"] == "ValidationException" and "while it is Creating" in error["Message"], error
    sm.delete_endpoint_config(EndpointConfigName="gated-config")
    sm.delete_model(ModelName="gated-alltraffic")
    (tmp_path / "gate").touch()
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="gated", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    assert (
        json.loads(runtime.invoke_endpoint(EndpointName="gated", Body=b"{}")["Body"].read())["container"]
        == "gated"
    )
    sm.delete_endpoint(EndpointName="gated")


def test_an_update_waits_for_a_request_whose_body_is_still_coming(local: LocalSageMaker) -> None:
    """A request whose head reached the old variant before traffic moved is answered by it, however late
    its body comes: the old containers stop only after (botocore sends a head and its body apart)."""
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "slow", ("AllTraffic", "test/echo:1", 1.0))
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="slow", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    body = b'{"late": true}'
    head = (
        b"POST /endpoints/slow/invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", local.proc.port), timeout=60) as sock:
        sock.sendall(head)  # parsed long before the new container (a process start away) takes traffic
        sm.update_endpoint(EndpointName="slow", EndpointConfigName=second_config(sm, "slow", "test/french:1"))

        def moved() -> bool:
            answer = runtime.invoke_endpoint(EndpointName="slow", Body=b"{}")
            return bool(json.loads(answer["Body"].read())["container"] == "french")

        wait_until(moved, "traffic on the new configuration")
        sock.sendall(body)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"container": "echo", "request": {"late": True}}
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="slow", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
