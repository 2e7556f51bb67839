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


def artifact(with_code: bool) -> bytes:
    """A model.tar.gz as the PyTorch DLC takes it: model.pth, and code/inference.py if asked."""
    saved = io.BytesIO()
    torch.jit.save(model(), saved)
    files = {"model.pth": saved.getvalue()}
    if with_code:
        files["code/inference.py"] = INFERENCE_PY.encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


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


def deploy(sm: Any, name: str, image: str, data: str) -> dict[str, Any]:
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": image,
            "ModelDataUrl": data,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
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
    logs = "".join(log.read_text() for log in (server.state / "plain").rglob("*.log"))
    assert "is PyTorch 1.8.1; this container runs the installed PyTorch 2.13.0" in logs


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
