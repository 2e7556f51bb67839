"""Real Triton (the tritonserver nvidia-pytriton bundles) behind the gateway: the Open Inference Protocol
over REST and gRPC, Triton's binary tensors, its SageMaker mode and its multi-model API.

tritonclient, Triton's own client, asks the same server directly; boto3 asks through the gateway; the
answers must agree.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from botocore.exceptions import ClientError
from conftest import (
    TRITON_BUILD,
    Processes,
    Triton,
    container_doc,
    endpoint_doc,
    multi_model_doc,
    runtime_client,
    s3_environment,
    start_triton,
)
from sklearn.datasets import load_digits
from test_local_sagemaker import LocalSageMaker, deploy_model

from gateway.launch.process import kill_group

PROTOCOLS = ("rest", "grpc")
BINARY = "application/vnd.sagemaker-triton.binary+json"


def images(count: int = 5) -> np.ndarray:
    rows: np.ndarray = load_digits().data[:count].astype(np.float32)
    return rows


def pixels(count: int = 5) -> np.ndarray:
    """The same digits as 8-bit images (what the ensemble takes)."""
    return np.round(images(count) * 255 / 16).astype(np.uint8)


def kserve_doc(name: str, server: Triton, protocol: str, **backend: Any) -> dict[str, Any]:
    url = server.grpc if protocol == "grpc" else server.http
    model = backend.pop("Model", "digits")
    return container_doc(name, url, Protocol=f"kserve-v2-{protocol}", Model=model, **backend)


def request_document(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    datatype = "UINT8" if rows.dtype == np.uint8 else "FP32"
    name = "PIXELS" if rows.dtype == np.uint8 else "IMAGES"
    tensor = {"name": name, "shape": list(rows.shape), "datatype": datatype, "data": rows.tolist()}
    return {"inputs": [tensor], **extra}


def outputs_of(answer: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        o["name"]: np.asarray(o["data"], dtype=np.float32 if o["datatype"] == "FP32" else np.int64).reshape(
            o["shape"]
        )
        for o in answer["outputs"]
    }


def invoke(
    client: Any, target: str, body: bytes | dict[str, Any], content_type: str = "application/json"
) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.invoke_endpoint(
        EndpointName="triton", TargetContainerHostname=target, ContentType=content_type, Body=raw
    )


def invoke_json(client: Any, target: str, body: dict[str, Any]) -> dict[str, Any]:
    response = invoke(client, target, body)
    assert response["ContentType"] == "application/json"
    answer: dict[str, Any] = json.loads(response["Body"].read())
    return answer


def direct(server: Triton, model: str, rows: np.ndarray, protocol: str) -> dict[str, np.ndarray]:
    """tritonclient's answer from the same server, no gateway."""
    library: Any = triton_grpc if protocol == "grpc" else triton_http
    address = server.grpc_address if protocol == "grpc" else server.http.removeprefix("http://")
    client = library.InferenceServerClient(address)
    try:
        name = "PIXELS" if rows.dtype == np.uint8 else "IMAGES"
        tensor = library.InferInput(name, list(rows.shape), "UINT8" if rows.dtype == np.uint8 else "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer(model, [tensor])
        return {n: result.as_numpy(n) for n in ("PROBABILITIES", "LABELS")}
    finally:
        client.close()


def invoke_model(
    client: Any, endpoint: str, target: str, body: dict[str, Any], **extra: str
) -> dict[str, Any]:
    """A multi-model invocation: TargetModel `target`, the protocol's JSON in and out."""
    response = client.invoke_endpoint(
        EndpointName=endpoint,
        TargetModel=target,
        ContentType="application/json",
        Body=json.dumps(body),
        **extra,
    )
    answer: dict[str, Any] = json.loads(response["Body"].read())
    return answer


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> dict[str, Any]:
    error: dict[str, Any] = excinfo.value.response["Error"]
    response = excinfo.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["Code"] == "ModelError"
    return {**error, "OriginalStatusCode": response.get("OriginalStatusCode"), **response}


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Triton]:
    server = start_triton(tmp_path_factory.mktemp("triton"))
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def gateway(module_procs: Processes, triton: Triton) -> Any:
    bystander = module_procs.container("bystander")
    containers = [
        kserve_doc("triton-rest", triton, "rest"),
        kserve_doc("triton-grpc", triton, "grpc"),
        kserve_doc("pipeline-rest", triton, "rest", Model="digits_pipeline"),
        kserve_doc("pipeline-grpc", triton, "grpc", Model="digits_pipeline"),
        kserve_doc("v1-rest", triton, "rest", ModelVersion="1"),
        kserve_doc("v1-grpc", triton, "grpc", ModelVersion="1"),
        kserve_doc("ghost-rest", triton, "rest", Model="nosuch"),
        kserve_doc("ghost-grpc", triton, "grpc", Model="nosuch"),
        container_doc("bystander", bystander.url),
    ]
    return module_procs.gateway(endpoint_doc("Direct", containers, name="triton"))


@pytest.fixture(scope="module")
def client(gateway: Any) -> Any:
    return runtime_client(gateway.url)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("version", ["", "v1"])
def test_answers_match_tritonclient(client: Any, triton: Triton, protocol: str, version: str) -> None:
    """boto3 through the gateway gets what Triton's own client gets from the server, value for value."""
    target = f"{version or 'triton'}-{protocol}"
    got = outputs_of(invoke_json(client, target, request_document(images())))
    for reference_protocol in PROTOCOLS:
        reference = direct(triton, "digits", images(), reference_protocol)
        assert np.array_equal(got["PROBABILITIES"], reference["PROBABILITIES"])
        assert np.array_equal(got["LABELS"], reference["LABELS"])
    assert got["LABELS"].tolist() == load_digits().target[:5].tolist()


def test_both_protocols_give_the_same_answer(client: Any) -> None:
    body = request_document(images(8), id="req-7", outputs=[{"name": "LABELS"}, {"name": "PROBABILITIES"}])
    rest, grpc = invoke_json(client, "triton-rest", body), invoke_json(client, "triton-grpc", body)
    for answer in (rest, grpc):
        assert answer["model_name"] == "digits" and answer["model_version"] == "1"
        assert answer["id"] == "req-7"
    assert sorted(rest["outputs"], key=lambda o: o["name"]) == sorted(
        grpc["outputs"], key=lambda o: o["name"]
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ensemble_is_tritons_own_pipeline(client: Any, triton: Triton, protocol: str) -> None:
    """digits_pipeline (scale, then classify) in one call: the classifier's labels from 8-bit pixels."""
    got = outputs_of(invoke_json(client, f"pipeline-{protocol}", request_document(pixels())))
    reference = direct(triton, "digits_pipeline", pixels(), protocol)
    assert np.array_equal(got["PROBABILITIES"], reference["PROBABILITIES"])
    assert got["LABELS"].tolist() == load_digits().target[:5].tolist()


def binary_request(rows: np.ndarray, *, outputs_binary: bool) -> tuple[bytes, int]:
    tensor = triton_http.InferInput("IMAGES", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    wanted = [
        triton_http.InferRequestedOutput("PROBABILITIES", binary_data=outputs_binary),
        triton_http.InferRequestedOutput("LABELS", binary_data=outputs_binary),
    ]
    body, size = triton_http.InferenceServerClient.generate_request_body([tensor], outputs=wanted)
    return body, size if size is not None else len(body)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_binary_tensors(client: Any, triton: Triton, protocol: str) -> None:
    """Triton's binary tensor extension with SageMaker's content type, both ways, over either protocol."""
    body, size = binary_request(images(), outputs_binary=True)
    response = invoke(client, f"triton-{protocol}", body, f"{BINARY};json-header-size={size}")
    content_type = response["ContentType"]
    assert content_type.startswith(f"{BINARY};json-header-size=")
    header_size = int(content_type.rsplit("=", 1)[1])
    result = triton_http.InferenceServerClient.parse_response_body(
        response["Body"].read(), header_length=header_size
    )
    reference = direct(triton, "digits", images(), "http")
    assert np.array_equal(result.as_numpy("PROBABILITIES"), reference["PROBABILITIES"])
    assert np.array_equal(result.as_numpy("LABELS"), reference["LABELS"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_binary_inputs_with_json_outputs(client: Any, protocol: str) -> None:
    body, size = binary_request(images(), outputs_binary=False)
    response = invoke(client, f"triton-{protocol}", body, f"{BINARY};json-header-size={size}")
    assert response["ContentType"] == "application/json"
    got = outputs_of(json.loads(response["Body"].read()))
    assert got["LABELS"].tolist() == load_digits().target[:5].tolist()


def _tensor(**changes: Any) -> dict[str, Any]:
    document = request_document(images(1))
    document["inputs"][0].update(changes)
    return document


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_tensor(name="NOPE"), "unexpected inference input 'NOPE'"),
        (_tensor(shape=[1, 63], data=[0.0] * 63), "unexpected shape for input 'IMAGES'"),
        (_tensor(datatype="INT32", data=[0] * 64), "data-type is 'INT32', but model 'digits' expects 'FP32'"),
    ],
    ids=["unknown-input", "wrong-shape", "wrong-datatype"],
)
def test_the_servers_errors_reach_the_client(
    client: Any, protocol: str, document: dict[str, Any], message: str
) -> None:
    """Triton's own refusal, with its status and message, as ModelError; the container keeps serving."""
    with pytest.raises(ClientError) as excinfo:
        invoke(client, f"triton-{protocol}", document)
    error = error_of(excinfo)
    assert error["OriginalStatusCode"] == 400
    assert message in json.loads(error["OriginalMessage"])["error"]
    assert outputs_of(invoke_json(client, f"triton-{protocol}", request_document(images(1))))[
        "LABELS"
    ].tolist() == [0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"inputs": [', "application/json", "parse"),
        (b"\xff\xfe", "application/json", "parse"),
        (json.dumps(_tensor(data=[0.0] * 10)).encode(), "application/json", "'data'"),
        (b'{"inputs": []}', f"{BINARY};json-header-size=40", "json-header-size 40"),
        (b"{}", BINARY, "json-header-size"),
    ],
    ids=["truncated-json", "not-utf8", "too-little-data", "header-past-body", "no-header-size"],
)
def test_unreadable_bodies_are_refused_as_the_server_would(
    client: Any, protocol: str, body: bytes, content_type: str, message: str
) -> None:
    """A body neither protocol can read: a 4xx/5xx ModelError in Triton's `{"error"}` shape, never a
    gateway failure."""
    with pytest.raises(ClientError) as excinfo:
        invoke(client, f"triton-{protocol}", body, content_type)
    error = error_of(excinfo)
    assert error["OriginalStatusCode"] in (400, 500)
    assert message.lower() in json.loads(error["OriginalMessage"])["error"].lower()


def test_a_container_is_ready_only_once_its_model_is(gateway: Any) -> None:
    """The server is up for every container; only those whose model is loaded count as ready."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(gateway.url + "/ping", timeout=10)
    assert excinfo.value.code == 503
    with excinfo.value:  # closed here: a socket left to the garbage collector is a ResourceWarning later
        containers = json.loads(excinfo.value.read())["containers"]
    assert {name for name, state in containers.items() if state["status"] != "Healthy"} == {
        "ghost-rest",
        "ghost-grpc",
    }
    assert "nosuch is not ready" in containers["ghost-rest"]["reason"]
    assert "nosuch is not ready" in containers["ghost-grpc"]["reason"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_the_server_lacks_is_a_model_error(client: Any, protocol: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        invoke(client, f"ghost-{protocol}", request_document(images(1)))
    error = error_of(excinfo)
    assert error["OriginalStatusCode"] in (400, 404)
    assert "nosuch" in error["OriginalMessage"]


# --- SageMaker mode: Triton's own /ping and /invocations, behind the generic contract ----------------


@pytest.fixture(scope="module")
def sagemaker_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Triton]:
    server = start_triton(
        tmp_path_factory.mktemp("triton-sagemaker"),
        "sagemaker",
        {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "digits"},
    )
    yield server
    server.process.stop()


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_sagemaker_mode_listens_on_loopback_only(sagemaker_triton: Triton) -> None:
    """Triton's SageMaker service binds 0.0.0.0 whatever it is told; natively it must not."""
    assert listening_addresses(sagemaker_triton.ports.bind) == {"0100007F"}  # 127.0.0.1


def test_sagemaker_mode_behind_the_generic_contract(
    procs: Processes, sagemaker_triton: Triton, triton: Triton
) -> None:
    gateway = procs.gateway(
        endpoint_doc("Direct", [container_doc("triton", sagemaker_triton.http)], name="triton")
    )
    client = runtime_client(gateway.url)
    got = outputs_of(invoke_json(client, "triton", request_document(images())))
    reference = direct(triton, "digits", images(), "http")
    assert np.array_equal(got["PROBABILITIES"], reference["PROBABILITIES"])
    body, size = binary_request(images(), outputs_binary=True)
    response = invoke(client, "triton", body, f"{BINARY};json-header-size={size}")
    header_size = int(response["ContentType"].rsplit("=", 1)[1])
    result = triton_http.InferenceServerClient.parse_response_body(
        response["Body"].read(), header_length=header_size
    )
    assert np.array_equal(result.as_numpy("LABELS"), reference["LABELS"])


def test_multi_model_triton(procs: Processes, tmp_path: Path, triton: Triton) -> None:
    """Triton's SageMaker multi-model API: each TargetModel loaded on first use, keyed by its name."""
    server = start_triton(tmp_path, "sagemaker", {"SAGEMAKER_MULTI_MODEL": "true"})
    try:
        document = endpoint_doc(
            "Direct", [multi_model_doc("triton", server.http, TRITON_BUILD / "multi-model")]
        )
        document["EndpointName"] = "triton"
        gateway = procs.gateway(document)
        client = runtime_client(gateway.url)

        def call(target: str, body: dict[str, Any]) -> dict[str, Any]:
            return invoke_model(client, "triton", target, body, TargetContainerHostname="triton")

        got = outputs_of(call("digits.tar.gz", request_document(images())))
        assert np.array_equal(
            got["PROBABILITIES"], direct(triton, "digits", images(), "http")["PROBABILITIES"]
        )
        scaled = call("digits_scale.tar.gz", request_document(pixels()))
        assert scaled["outputs"][0]["name"] == "IMAGES"
        assert outputs_of(call("digits.tar.gz", request_document(images(2))))["LABELS"].tolist() == [0, 1]
        with pytest.raises(ClientError) as excinfo:
            call("nosuch.tar.gz", request_document(images(1)))
        assert excinfo.value.response["Error"]["Code"] in ("ModelError", "ValidationError")
    finally:
        server.process.stop()


# --- SageMaker's Triton image through the local SageMaker -----------------------------------------

SAGEMAKER_TRITON = "785573368785.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"


def repository_tar_gz() -> bytes:
    """build/triton/model-repository as a SageMaker model.tar.gz: the model folders at its root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for model in sorted((TRITON_BUILD / "model-repository").iterdir()):
            archive.add(model, arcname=model.name)
    return buffer.getvalue()


def test_sagemakers_triton_image_deployed_with_boto3(
    tmp_path: Path, s3: tuple[str, Any], triton: Triton
) -> None:
    """create_model with SageMaker's Triton image URI and a model repository in S3, as on AWS: Triton in
    its SageMaker mode, SAGEMAKER_TRITON_DEFAULT_MODEL_NAME choosing what /invocations runs."""
    url, bucket = s3
    bucket.put_object(Bucket="models", Key="triton/model.tar.gz", Body=repository_tar_gz())
    server = LocalSageMaker(tmp_path, env=s3_environment(url))
    try:
        sm, runtime = server.sagemaker(), server.runtime()
        described = deploy_model(
            sm,
            "triton",
            primary={
                "Image": SAGEMAKER_TRITON,
                "ModelDataUrl": "s3://models/triton/model.tar.gz",
                "Environment": {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "digits_pipeline"},
            },
        )
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        response = runtime.invoke_endpoint(
            EndpointName="triton", ContentType="application/json", Body=json.dumps(request_document(pixels()))
        )
        got = outputs_of(json.loads(response["Body"].read()))
        reference = direct(triton, "digits_pipeline", pixels(), "http")
        assert np.array_equal(got["PROBABILITIES"], reference["PROBABILITIES"])
        assert got["LABELS"].tolist() == load_digits().target[:5].tolist()
    finally:
        try:
            server.stop()
        finally:
            server.proc.kill()


# --- Text (BYTES) tensors, and a server that dies ------------------------------------------------

SHOUT_CONFIG = """
name: "shout"
backend: "python"
max_batch_size: 0
input [ { name: "TEXT", data_type: TYPE_STRING, dims: [ -1 ] } ]
output [
  { name: "LOUD", data_type: TYPE_STRING, dims: [ -1 ] },
  { name: "LENGTHS", data_type: TYPE_INT32, dims: [ -1 ] }
]
"""
SHOUT_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = [t.decode("utf-8") for t in pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()]
            loud = np.array([t.upper().encode("utf-8") for t in text], dtype=np.object_)
            lengths = np.array([len(t) for t in text], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("LOUD", loud), pb_utils.Tensor("LENGTHS", lengths)]))
        return responses
"""


@pytest.fixture(scope="module")
def shouting_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Triton]:
    """A Triton with a text model of the test's own: BYTES in, BYTES and INT32 out."""
    root = tmp_path_factory.mktemp("triton-text")
    (root / "models" / "shout" / "1").mkdir(parents=True)
    (root / "models" / "shout" / "config.pbtxt").write_text(SHOUT_CONFIG)
    (root / "models" / "shout" / "1" / "model.py").write_text(SHOUT_MODEL)
    server = start_triton(root, env={"MCE_MODEL_DIR": str(root / "models")})
    yield server
    server.process.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_text_tensors_cross_either_protocol(procs: Processes, shouting_triton: Triton, protocol: str) -> None:
    words = ["héllo", "", "triton ✓"]
    document = endpoint_doc(
        "Direct", [kserve_doc("shout", shouting_triton, protocol, Model="shout")], name="triton"
    )
    client = runtime_client(procs.gateway(document).url)
    body = {"inputs": [{"name": "TEXT", "shape": [3], "datatype": "BYTES", "data": words}]}
    answer = {o["name"]: o for o in invoke_json(client, "shout", body)["outputs"]}
    assert answer["LOUD"]["data"] == [w.upper() for w in words]
    assert answer["LOUD"]["datatype"] == "BYTES" and answer["LOUD"]["shape"] == [3]
    assert answer["LENGTHS"]["data"] == [5, 0, 8]
    tensor = triton_http.InferInput("TEXT", [3], "BYTES")
    tensor.set_data_from_numpy(np.array([w.encode() for w in words], dtype=np.object_), binary_data=True)
    binary, size = triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=[triton_http.InferRequestedOutput("LOUD", binary_data=True)]
    )
    response = invoke(client, "shout", binary, f"{BINARY};json-header-size={size}")
    result = triton_http.InferenceServerClient.parse_response_body(
        response["Body"].read(), header_length=int(response["ContentType"].rsplit("=", 1)[1])
    )
    assert [v.decode() for v in result.as_numpy("LOUD")] == [w.upper() for w in words]


def test_a_triton_that_dies_is_a_model_error_and_the_others_keep_serving(
    procs: Processes, tmp_path: Path
) -> None:
    server = start_triton(tmp_path)
    bystander = procs.container("bystander")
    containers = [
        kserve_doc("rest", server, "rest"),
        kserve_doc("grpc", server, "grpc"),
        container_doc("bystander", bystander.url),
    ]
    client = runtime_client(procs.gateway(endpoint_doc("Direct", containers, name="triton")).url)
    try:
        for target in ("rest", "grpc"):
            assert outputs_of(invoke_json(client, target, request_document(images(1))))[
                "LABELS"
            ].tolist() == [0]
        kill_group(server.process.pid)  # SIGKILL: the server and its Python-backend stubs, no goodbye
        server.process.stop()  # reaped
        for target in ("rest", "grpc"):
            with pytest.raises(ClientError) as excinfo:
                invoke(client, target, request_document(images(1)))
            assert excinfo.value.response["Error"]["Code"] == "ModelError"
            assert target in excinfo.value.response["Error"]["Message"]
        answer = client.invoke_endpoint(
            EndpointName="triton", TargetContainerHostname="bystander", Body=b"{}"
        )
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        # read: a body left unread keeps its connection out of the client's pool, so closing the client
        # leaves that socket to the garbage collector, a ResourceWarning in whichever test runs then
        assert answer["Body"].read()
    finally:
        server.process.stop()


def test_sagemakers_triton_image_as_a_multi_model_endpoint(
    tmp_path: Path, s3: tuple[str, Any], triton: Triton
) -> None:
    """create_model Mode MultiModel with SageMaker's Triton image and a prefix of model.tar.gz files: each
    TargetModel loaded through Triton's multi-model API on first use."""
    url, bucket = s3
    for name in ("digits", "digits_scale"):
        body = (TRITON_BUILD / "multi-model" / f"{name}.tar.gz").read_bytes()
        bucket.put_object(Bucket="models", Key=f"triton-mme/{name}.tar.gz", Body=body)
    server = LocalSageMaker(tmp_path, env=s3_environment(url))
    try:
        sm, runtime = server.sagemaker(), server.runtime()
        described = deploy_model(
            sm,
            "triton-mme",
            primary={
                "Image": SAGEMAKER_TRITON,
                "Mode": "MultiModel",
                "ModelDataUrl": "s3://models/triton-mme/",
            },
        )
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")

        def call(target: str, body: dict[str, Any]) -> dict[str, Any]:
            return invoke_model(runtime, "triton-mme", target, body)

        got = outputs_of(call("digits.tar.gz", request_document(images())))
        assert np.array_equal(
            got["PROBABILITIES"], direct(triton, "digits", images(), "http")["PROBABILITIES"]
        )
        assert call("digits_scale.tar.gz", request_document(pixels()))["outputs"][0]["name"] == "IMAGES"
    finally:
        try:
            server.stop()
        finally:
            server.proc.kill()
