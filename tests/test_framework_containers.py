"""SageMaker's framework containers, natively, deployed as the seed blog deploys them: boto3's
create_model with the Deep Learning Container's image URI and a `model.tar.gz` in S3 laid out for it.
The PyTorch one is TorchServe with the real SageMaker PyTorch inference toolkit
(containers/pytorch-inference)."""

from __future__ import annotations

import functools
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy.testing
import pytest
import torch
from conftest import build_tensorflow_model, s3_environment
from test_local_sagemaker import LocalSageMaker, deploy_model

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
    container = {
        "Image": image,
        "ModelDataUrl": data,
        "Environment": {"SAGEMAKER_PROGRAM": "inference.py", **(environment or {})},
    }
    return deploy_model(sm, name, primary=container)


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
    described = deploy_model(
        sm,
        "pair",
        containers=[
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
    )
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
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


# SageMaker's TensorFlow inference container (containers/tensorflow-inference), on the digits SavedModel
TENSORFLOW = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:{tag}"
TF_TAG = "2.21.0-cpu"
TF_HANDLERS = b"""
import json

def input_handler(data, context):
    rows = [[float(v) for v in line.split(",")] for line in data.read().decode().splitlines() if line]
    return json.dumps({"instances": rows})

def output_handler(response, context):
    classes = [max(range(10), key=p.__getitem__) for p in response.json()["predictions"]]
    return json.dumps({"classes": classes, "model": context.model_name}), context.accept_header
"""


@functools.cache
def saved_model_files(prefix: str) -> dict[str, bytes]:
    """The digits SavedModel (containers/tensorflow's build) as `<prefix><version>/...` archive members."""
    built = build_tensorflow_model() / "mnist"
    return {
        prefix + str(path.relative_to(built)): path.read_bytes()
        for path in built.rglob("*")
        if path.is_file()
    }


def digits(count: int) -> tuple[list[list[float]], list[int]]:
    from sklearn.datasets import load_digits

    loaded = load_digits()
    return loaded.data[-count:].tolist(), loaded.target[-count:].tolist()


@pytest.fixture
def tensorflow_artifacts(local: tuple[LocalSageMaker, Any]) -> tuple[LocalSageMaker, Any]:
    server, bucket = local
    model = saved_model_files("")
    put = {
        "tf/plain": model,
        "tf/named": {**saved_model_files("digits/"), **saved_model_files("other/")},
        "tf/with-code": {**model, "code/inference.py": TF_HANDLERS},
        "tf/no-model": {"digits/saved_model.pb": model["1/saved_model.pb"]},  # no version folder
        "tf/import-fails": {**model, "code/inference.py": b"raise ImportError('needs tensorflow_text')\n"},
    }
    for key, files in put.items():
        bucket.put_object(Bucket="models", Key=f"{key}/model.tar.gz", Body=tar_gz(files))
    return server, bucket


def test_the_tensorflow_dlc_takes_json_csv_and_json_lines(
    tensorflow_artifacts: tuple[LocalSageMaker, Any],
) -> None:
    server, _ = tensorflow_artifacts
    sm, runtime = server.sagemaker(), server.runtime()
    described = deploy(sm, "tf", TENSORFLOW.format(tag=TF_TAG), "s3://models/tf/plain/model.tar.gz")
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    rows, truth = digits(6)

    def predictions(content_type: str, body: str) -> list[list[float]]:
        answer = runtime.invoke_endpoint(EndpointName="tf", ContentType=content_type, Body=body)
        assert answer["ContentType"] == "application/json"
        found: list[list[float]] = json.loads(answer["Body"].read())["predictions"]
        return found

    served = predictions("application/json", json.dumps({"instances": rows}))
    assert sum(max(range(10), key=p.__getitem__) == t for p, t in zip(served, truth, strict=True)) >= 5
    csv = "\n".join(",".join(repr(v) for v in row) for row in rows)
    numpy.testing.assert_allclose(predictions("text/csv", csv), served, rtol=1e-6)
    lines = "\n".join(json.dumps(row) for row in rows)
    numpy.testing.assert_allclose(predictions("application/jsonlines", lines), served, rtol=1e-6)
    numpy.testing.assert_allclose(predictions("application/json", json.dumps(rows)), served, rtol=1e-6)
    one = predictions("application/json", json.dumps(rows[0]))  # a one-dimensional list: one instance
    # a batch of one runs other TensorFlow kernels than a batch of six: the softmax's tiny probabilities
    # (1e-24) differ in their sixth digit, so they are compared absolutely as well
    numpy.testing.assert_allclose(one, served[:1], rtol=1e-6, atol=1e-12)
    # bad input: TF Serving's own message and status, as a ModelError
    with pytest.raises(runtime.exceptions.ModelError) as failed:
        predictions("text/csv", "1.0,2.0,3.0")
    assert failed.value.response["OriginalStatusCode"] == 400
    assert "input 'pixels' has shape [1, 3]; the signature expects [?, 64]" in str(failed.value)
    with pytest.raises(runtime.exceptions.ModelError) as failed:
        predictions("application/x-npy", "\x93NUMPY")
    assert failed.value.response["OriginalStatusCode"] == 415
    assert "Unsupported Media Type: application/x-npy" in str(failed.value)


def test_the_tensorflow_dlc_picks_a_model_by_custom_attributes(
    tensorflow_artifacts: tuple[LocalSageMaker, Any],
) -> None:
    server, _ = tensorflow_artifacts
    sm, runtime = server.sagemaker(), server.runtime()
    described = deploy(
        sm,
        "tf-named",
        TENSORFLOW.format(tag=TF_TAG),
        "s3://models/tf/named/model.tar.gz",
        {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "other"},
    )
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    rows, _ = digits(2)
    body = json.dumps({"instances": rows})
    for attributes in ("", "tfs-model-name=digits", "tfs-model-name=other,tfs-model-version=1"):
        extra = {"CustomAttributes": attributes} if attributes else {}
        answer = runtime.invoke_endpoint(
            EndpointName="tf-named", ContentType="application/json", Body=body, **extra
        )
        assert len(json.loads(answer["Body"].read())["predictions"]) == 2
    with pytest.raises(runtime.exceptions.ModelError) as failed:
        runtime.invoke_endpoint(
            EndpointName="tf-named",
            ContentType="application/json",
            Body=body,
            CustomAttributes="tfs-model-name=nosuch",
        )
    assert failed.value.response["OriginalStatusCode"] == 404
    assert "Servable not found for request: Latest(nosuch)" in str(failed.value)
    with pytest.raises(runtime.exceptions.ModelError) as failed:
        runtime.invoke_endpoint(
            EndpointName="tf-named",
            ContentType="application/json",
            Body=body,
            CustomAttributes="tfs-method=train",
        )
    assert failed.value.response["OriginalStatusCode"] == 400
    assert "invalid tfs-method" in str(failed.value)


def test_the_tensorflow_dlc_runs_input_and_output_handlers(
    tensorflow_artifacts: tuple[LocalSageMaker, Any],
) -> None:
    server, _ = tensorflow_artifacts
    sm, runtime = server.sagemaker(), server.runtime()
    described = deploy(
        sm, "tf-code", TENSORFLOW.format(tag="2.3.1-cpu"), "s3://models/tf/with-code/model.tar.gz"
    )
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    rows, truth = digits(6)
    answer = runtime.invoke_endpoint(
        EndpointName="tf-code",
        ContentType="text/csv",
        Accept="application/json",
        Body="\n".join(",".join(str(v) for v in row) for row in rows),
    )
    got = json.loads(answer["Body"].read())
    assert got["model"] is None  # no tfs-model-name asked for, as the container's context has it
    assert sum(c == t for c, t in zip(got["classes"], truth, strict=True)) >= 5
    shown = local_status(server.url) or status(server.url)
    assert "is TensorFlow 2.3.1; this container runs the installed TensorFlow 2.21" in shown
    with pytest.raises(runtime.exceptions.ModelError) as failed:  # input_handler fails: 500, its message
        runtime.invoke_endpoint(EndpointName="tf-code", ContentType="text/csv", Body="a,b")
    assert failed.value.response["OriginalStatusCode"] == 500
    assert "could not convert string to float: 'a'" in str(failed.value)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no-model", "no SavedModel bundles found"),
        ("import-fails", "ImportError: needs tensorflow_text"),
    ],
)
def test_a_broken_tensorflow_artifact_fails_the_endpoint_with_its_reason(
    tensorflow_artifacts: tuple[LocalSageMaker, Any], case: str, reason: str
) -> None:
    server, _ = tensorflow_artifacts
    described = deploy(
        server.sagemaker(), case, TENSORFLOW.format(tag=TF_TAG), f"s3://models/tf/{case}/model.tar.gz"
    )
    assert described["EndpointStatus"] == "Failed"
    assert reason in described["FailureReason"], described["FailureReason"]


PREPROCESS = b"""
import json

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    text = body.decode() if isinstance(body, (bytes, bytearray)) else body
    return [[min(16.0, max(0.0, float(v))) for v in line.split(",")] for line in text.splitlines() if line]

def predict_fn(rows, model):
    return rows

def output_fn(rows, accept):
    return json.dumps({"instances": rows})
"""


def test_a_serial_pipeline_of_framework_containers(tensorflow_artifacts: tuple[LocalSageMaker, Any]) -> None:
    """PyTorch's inference.py turns CSV into TF Serving's JSON, which the TensorFlow container predicts on."""
    server, bucket = tensorflow_artifacts
    bucket.put_object(Bucket="models", Key="pre/model.tar.gz", Body=tar_gz({"code/inference.py": PREPROCESS}))
    sm, runtime = server.sagemaker(), server.runtime()
    described = deploy_model(
        sm,
        "pipeline",
        containers=[
            {
                "ContainerHostname": "preprocess",
                "Image": PYTORCH.format(tag="2.13.0-cpu-py311"),
                "ModelDataUrl": "s3://models/pre/model.tar.gz",
            },
            {
                "ContainerHostname": "classify",
                "Image": TENSORFLOW.format(tag=TF_TAG),
                "ModelDataUrl": "s3://models/tf/plain/model.tar.gz",
            },
        ],
        mode="Serial",
    )
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    rows, _ = digits(6)
    noisy = [[v * 1.5 for v in row] for row in rows]  # out of range: the first step clips it
    answer = runtime.invoke_endpoint(
        EndpointName="pipeline",
        ContentType="text/csv",
        Accept="application/json",
        Body="\n".join(",".join(str(v) for v in row) for row in noisy),
    )
    predictions = json.loads(answer["Body"].read())["predictions"]
    assert len(predictions) == 6 and all(len(p) == 10 for p in predictions)
    clipped = [[min(16.0, v) for v in row] for row in noisy]
    direct = runtime.invoke_endpoint(
        EndpointName="pipeline",
        ContentType="text/csv",
        Body="\n".join(",".join(str(v) for v in row) for row in clipped),
    )
    numpy.testing.assert_allclose(json.loads(direct["Body"].read())["predictions"], predictions, rtol=1e-6)


def test_the_tensorflow_front_end_refuses_a_content_length_that_is_not_a_number(tmp_path: Path) -> None:
    """Raw bytes: a Content-Length the HTTP server cannot parse is a 400 in the container's error shape
    (not a traceback and a dropped connection), and the container keeps serving."""
    import os
    import sys
    import urllib.request

    from conftest import ROOT, raw_exchange, wait_until

    from gateway.launch.ports import allocate
    from gateway.launch.process import ContainerProcess

    model = tmp_path / "model"
    for name, data in saved_model_files("").items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(data)
    ports = allocate()
    environment = {
        **os.environ,
        **ports.environment(),
        "MCE_MODEL_DIR": str(model),
        "MCE_BIND_ADDRESS": "127.0.0.1",
        "MCE_PYTHON": sys.executable,
    }
    script = ROOT / "containers" / "tensorflow-inference" / "serve.py"
    process = ContainerProcess([sys.executable, str(script)], env=environment, log_path=tmp_path / "tf.log")
    url = f"http://127.0.0.1:{ports.bind}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return process.returncode is not None

    try:
        wait_until(ready, "the TensorFlow front end's /ping")
        assert process.returncode is None, (tmp_path / "tf.log").read_text()[-2000:]
        for length in (b"abc", b"-5", b"1e3", b"\xd9\xa3"):
            answer = raw_exchange(
                ports.bind,
                b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + length + b"\r\n\r\n{}",
            )
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), answer
            assert "is not a number of bytes" in json.loads(body)["error"]
        rows, _ = digits(1)
        request = urllib.request.Request(
            url + "/invocations",
            data=json.dumps({"instances": rows}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.loads(response.read())["predictions"]) == 1
    finally:
        process.stop()
