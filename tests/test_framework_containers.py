"""SageMaker's framework containers, natively, deployed as the seed blog deploys them: boto3's
create_model with the Deep Learning Container's image URI and a `model.tar.gz` in S3 laid out for it.
The PyTorch one is TorchServe with the real SageMaker PyTorch inference toolkit
(containers/pytorch-inference)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy.testing
import pytest
import torch
from conftest import s3_environment
from test_local_sagemaker import ROLE, LocalSageMaker

from gateway.status import local_status, status

# torch 2.13 calls TorchScript deprecated; the PyTorch DLC's default model_fn loads it all the same
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
PYTORCH = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:{tag}"
INFERENCE_PY = """
import json, torch

def model_fn(model_dir):
    return torch.jit.load(model_dir + "/model.pth")

def input_fn(body, content_type):
    return torch.tensor(json.loads(body)["inputs"], dtype=torch.float32)

def predict_fn(data, model):
    with torch.no_grad():
        return model(data)

def output_fn(prediction, accept):
    return json.dumps({"predictions": prediction.tolist(), "by": "inference.py"})
"""
ROWS = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, -1.0, 2.0]]


def model() -> torch.jit.ScriptModule:
    """A TorchScript model, what the PyTorch DLC's default model_fn loads."""
    torch.manual_seed(0)
    scripted: torch.jit.ScriptModule = torch.jit.script(
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    )
    return scripted


def torchscript() -> bytes:
    saved = io.BytesIO()
    torch.jit.save(model(), saved)
    return saved.getvalue()


def tar_gz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def artifact(with_code: bool) -> bytes:
    """A model.tar.gz as the PyTorch DLC takes it: model.pth, and code/inference.py if asked."""
    files = {"model.pth": torchscript()}
    if with_code:
        files["code/inference.py"] = INFERENCE_PY.encode()
    return tar_gz(files)


@pytest.fixture
def local(tmp_path: Path, s3: tuple[str, Any]) -> Iterator[tuple[LocalSageMaker, Any]]:
    url, bucket = s3
    bucket.put_object(Bucket="models", Key="dlc/with-code/model.tar.gz", Body=artifact(True))
    bucket.put_object(Bucket="models", Key="dlc/plain/model.tar.gz", Body=artifact(False))
    server = LocalSageMaker(tmp_path, env=s3_environment(url))
    yield server, bucket
    try:
        server.stop()
    finally:
        server.proc.kill()


def deploy(
    sm: Any, name: str, image: str, data: str, environment: dict[str, str] | None = None
) -> dict[str, Any]:
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": image,
            "ModelDataUrl": data,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", **(environment or {})},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name}]
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    described: dict[str, Any] = sm.describe_endpoint(EndpointName=name)
    while described["EndpointStatus"] == "Creating":
        described = sm.describe_endpoint(EndpointName=name)  # each call waits for the endpoint to settle
    return described


def expected() -> list[list[float]]:
    with torch.no_grad():
        result: list[list[float]] = model()(torch.tensor(ROWS)).tolist()
    return result


def test_the_pytorch_dlc_runs_a_model_with_its_inference_py(local: tuple[LocalSageMaker, Any]) -> None:
    server, _ = local
    sm, runtime = server.sagemaker(), server.runtime()
    described = deploy(
        sm, "with-code", PYTORCH.format(tag="2.13.0-cpu-py311"), "s3://models/dlc/with-code/model.tar.gz"
    )
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    answer = runtime.invoke_endpoint(
        EndpointName="with-code", ContentType="application/json", Body=json.dumps({"inputs": ROWS})
    )
    got = json.loads(answer["Body"].read())
    assert got["by"] == "inference.py"
    numpy.testing.assert_allclose(got["predictions"], expected(), rtol=1e-5)


def test_the_pytorch_dlc_defaults_serve_a_torchscript_model(local: tuple[LocalSageMaker, Any]) -> None:
    server, _ = local
    sm, runtime = server.sagemaker(), server.runtime()
    # the seed blog's PyTorch version: another than the installed one, which the container's log says
    described = deploy(
        sm, "plain", PYTORCH.format(tag="1.8.1-cpu-py36"), "s3://models/dlc/plain/model.tar.gz"
    )
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    answer = runtime.invoke_endpoint(
        EndpointName="plain", ContentType="application/json", Accept="application/json", Body=json.dumps(ROWS)
    )
    numpy.testing.assert_allclose(json.loads(answer["Body"].read()), expected(), rtol=1e-5)
    warning = "is PyTorch 1.8.1; this container runs the installed PyTorch 2.13.0"
    logs = "".join(log.read_text() for log in (server.state / "plain").rglob("*.log"))
    assert warning in logs
    shown = local_status(server.url) or status(server.url)  # what `mce status` shows
    assert f"container-1: {PYTORCH.format(tag='1.8.1-cpu-py36')} {warning}" in shown


def test_the_submit_directory_can_be_an_s3_tar_gz(local: tuple[LocalSageMaker, Any]) -> None:
    server, bucket = local
    bucket.put_object(
        Bucket="models", Key="code/sourcedir.tar.gz", Body=tar_gz({"inference.py": INFERENCE_PY.encode()})
    )
    sm, runtime = server.sagemaker(), server.runtime()
    image = PYTORCH.format(tag="2.13.0-cpu-py311")
    submitted = {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://models/code/sourcedir.tar.gz"}
    described = deploy(sm, "submitted", image, "s3://models/dlc/plain/model.tar.gz", submitted)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    answer = runtime.invoke_endpoint(
        EndpointName="submitted", ContentType="application/json", Body=json.dumps({"inputs": ROWS})
    )
    assert json.loads(answer["Body"].read())["by"] == "inference.py"
    missing = {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://models/code/nothing.tar.gz"}
    described = deploy(sm, "unsubmitted", image, "s3://models/dlc/plain/model.tar.gz", missing)
    assert described["EndpointStatus"] == "Failed"
    assert (
        "SAGEMAKER_SUBMIT_DIRECTORY s3://models/code/nothing.tar.gz cannot be downloaded"
        in (described["FailureReason"])
    )


def test_a_gpu_image_fails_clearly(local: tuple[LocalSageMaker, Any]) -> None:
    server, _ = local
    described = deploy(
        server.sagemaker(),
        "gpu",
        PYTORCH.format(tag="2.13.0-gpu-py311"),
        "s3://models/dlc/plain/model.tar.gz",
    )
    assert described["EndpointStatus"] == "Failed"
    assert "is a GPU image; this machine runs the CPU one" in described["FailureReason"]


BROKEN = {
    "no-model": ({"README.txt": b"no model here"}, "holds no model.pth or model.pt and no code/inference.py"),
    "import-fails": (
        {"model.pth": b"", "code/inference.py": b"import json\nraise RuntimeError('no GPU driver found')\n"},
        "RuntimeError: no GPU driver found",
    ),
    "model-fn-fails": (
        {
            "model.pth": b"",
            "code/inference.py": b"def model_fn(model_dir):\n    raise ValueError('bad weights')\n",
        },
        "ValueError: bad weights",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_pytorch_artifact_fails_the_endpoint_with_its_reason(
    local: tuple[LocalSageMaker, Any], case: str
) -> None:
    server, bucket = local
    files, reason = BROKEN[case]
    bucket.put_object(Bucket="models", Key=f"broken/{case}/model.tar.gz", Body=tar_gz(files))
    described = deploy(
        server.sagemaker(),
        case,
        PYTORCH.format(tag="2.13.0-cpu-py311"),
        f"s3://models/broken/{case}/model.tar.gz",
    )
    assert described["EndpointStatus"] == "Failed"
    assert reason in described["FailureReason"], described["FailureReason"]


FAILS_ON_REQUEST = b"""
def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    return body

def predict_fn(data, model):
    raise ValueError(f"cannot predict with model {model!r}")
"""


def test_an_inference_py_that_fails_a_request_is_a_model_error_and_its_neighbour_serves(
    local: tuple[LocalSageMaker, Any],
) -> None:
    server, bucket = local
    bucket.put_object(
        Bucket="models",
        Key="broken/on-request/model.tar.gz",
        Body=tar_gz({"model.pth": b"", "code/inference.py": FAILS_ON_REQUEST}),
    )
    sm, runtime = server.sagemaker(), server.runtime()
    image = PYTORCH.format(tag="2.13.0-cpu-py311")
    sm.create_model(
        ModelName="pair",
        ExecutionRoleArn=ROLE,
        Containers=[
            {
                "ContainerHostname": "good",
                "Image": image,
                "ModelDataUrl": "s3://models/dlc/with-code/model.tar.gz",
            },
            {
                "ContainerHostname": "bad",
                "Image": image,
                "ModelDataUrl": "s3://models/broken/on-request/model.tar.gz",
            },
        ],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="pair", ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "pair"}]
    )
    sm.create_endpoint(EndpointName="pair", EndpointConfigName="pair")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="pair", WaiterConfig={"Delay": 1})
    body = json.dumps({"inputs": ROWS})
    with pytest.raises(runtime.exceptions.ModelError) as failed:
        runtime.invoke_endpoint(
            EndpointName="pair", ContentType="application/json", TargetContainerHostname="bad", Body=body
        )
    error = failed.value.response
    assert "cannot predict with model None" in error["Error"]["Message"], error
    assert error["OriginalStatusCode"] >= 400
    answer = runtime.invoke_endpoint(
        EndpointName="pair", ContentType="application/json", TargetContainerHostname="good", Body=body
    )
    numpy.testing.assert_allclose(json.loads(answer["Body"].read())["predictions"], expected(), rtol=1e-5)
