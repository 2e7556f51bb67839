"""The endpoint document: SageMaker's CreateModel rules, each broken once, with the path and the rule
named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.endpoint import ContainerMode, ExecutionMode, load_endpoint, parse_endpoint
from gateway.errors import DocumentError


def problems(raw: Any, default_name: str = "demo") -> list[str]:
    with pytest.raises(DocumentError) as caught:
        parse_endpoint(raw, source="doc.yaml", default_name=default_name)
    return [str(issue) for issue in caught.value.issues]


def direct(*containers: dict[str, Any]) -> dict[str, Any]:
    return {"InferenceExecutionConfig": {"Mode": "Direct"}, "Containers": list(containers)}


def test_a_create_model_request_as_users_have_it() -> None:
    endpoint = parse_endpoint(
        {
            "ModelName": "mnist-multi",
            "ExecutionRoleArn": "arn:aws:iam::111122223333:role/SageMakerRole",
            "InferenceExecutionConfig": {"Mode": "Direct"},
            "Containers": [
                {
                    "ContainerHostname": "tensorflow-mnist",
                    "Image": "tf:latest",
                    "ModelDataUrl": "s3://b/tf.tar.gz",
                    "Environment": {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "mnist"},
                },
                {
                    "ContainerHostname": "pytorch-mnist",
                    "Image": "pt:latest",
                    "Mode": "MultiModel",
                    "ModelDataUrl": "s3://b/models/",
                },
            ],
        },
        source="doc.yaml",
        default_name="mnist-direct",
    )
    assert endpoint.EndpointName == "mnist-direct"
    assert endpoint.mode is ExecutionMode.DIRECT
    assert endpoint.containers[1].Mode is ContainerMode.MULTI_MODEL
    assert endpoint.containers[0].Backend.InvocationTimeoutInSeconds == 60


def test_serial_is_the_default_and_names_are_assigned_by_position() -> None:
    endpoint = parse_endpoint({"Containers": [{}, {}]}, source="x", default_name="pipe")
    assert endpoint.mode is ExecutionMode.SERIAL
    assert [endpoint.hostname(i) for i in range(2)] == ["container-1", "container-2"]


def test_primary_container_is_one_container() -> None:
    endpoint = parse_endpoint({"PrimaryContainer": {"Image": "x"}}, source="x", default_name="single")
    assert len(endpoint.containers) == 1


def test_the_issue_example_message() -> None:
    doc = direct({"ContainerHostname": "a"}, {"ContainerHostname": "b"}, {"ContainerHostname": "bad_name"})
    assert problems(doc) == [
        "Containers[2].ContainerHostname: 'bad_name' does not match [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
    ]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"Containers": [{"ContainerHostname": "h" * 64}]}, "Containers[0].ContainerHostname: 'hhhh"),
        (
            direct({"ContainerHostname": "a"}, {"ContainerHostname": "a"}),
            "Containers[1].ContainerHostname: 'a' is already the hostname of Containers[0]",
        ),
        (
            {"Containers": [{"ContainerHostname": "a"}, {}]},
            "Containers[1].ContainerHostname: required because another container sets one",
        ),
        (direct({"ContainerHostname": "a"}, {}), "Containers[1].ContainerHostname: required in Direct mode"),
        ({"Containers": [{}] * 16}, "Containers: 16 containers; at most 15"),
        ({"Containers": []}, "Containers: needs at least 1 item(s)"),
        ({}, "Containers: give exactly one of Containers and PrimaryContainer"),
        ({"PrimaryContainer": {}, "Containers": [{}]}, "give exactly one of Containers and PrimaryContainer"),
        (
            {"Containers": [{"Environment": {"9LIVES": "x"}}]},
            "Containers[0].Environment.9LIVES (key): '9LIVES' does not match",
        ),
        ({"Containers": [{"Environment": {"K": "v" * 1025}}]}, "Containers[0].Environment.K: 'vvvv"),
        (
            {"Containers": [{"Environment": {f"K{i}": "v" for i in range(101)}}]},
            "Containers[0].Environment: 101 entries; at most 100",
        ),
        (
            {"Containers": [{"Environment": {f"K{i}": "v" * 1000 for i in range(40)}}]},
            "Containers[0].Environment: keys and values total",
        ),
        (
            {
                "Containers": [
                    {"Environment": {f"K{i}": "v" * 1000 for i in range(20)}},
                    {"Environment": {f"K{i}": "v" * 1000 for i in range(20)}},
                ]
            },
            "Containers: Environment keys and values total",
        ),
        (
            {"Containers": [{"Mode": "Multi"}]},
            "Containers[0].Mode: 'Multi' is not one of 'SingleModel' or 'MultiModel'",
        ),
        (
            {"Containers": [{"Mode": "MultiModel"}, {"Mode": "MultiModel"}]},
            "Containers[1].Mode: a Serial pipeline holds at most one",
        ),
        (
            {"Containers": [{"Mode": "MultiModel"}]},
            "Containers[0].ModelDataUrl: required for Mode MultiModel",
        ),
        (
            {"Containers": [{"Mode": "MultiModel", "ModelDataUrl": "s3://b/one.tar.gz"}]},
            "Containers[0].ModelDataUrl: for Mode MultiModel this is a prefix",
        ),
        (
            {
                "Containers": [
                    {
                        "Mode": "MultiModel",
                        "ModelDataUrl": "m/",
                        "Backend": {"Protocol": "torchserve-rest", "Model": "m"},
                    }
                ]
            },
            "Containers[0].Backend.Protocol: a MultiModel container is reached over its multi-model API",
        ),
        (
            {"Containers": [{"Backend": {"MultiModel": {"MemoryBudgetInMiB": 512}}}]},
            "Containers[0].Backend.MultiModel: only for a container with Mode: MultiModel",
        ),
        (
            {"Containers": [{"MultiModelConfig": {"ModelCacheSetting": "Disabled"}}]},
            "Containers[0].MultiModelConfig: only for a container with Mode: MultiModel",
        ),
        (
            {
                "Containers": [
                    {
                        "Mode": "MultiModel",
                        "ModelDataUrl": "m/",
                        "Backend": {"MultiModel": {"MemoryBudgetInMiB": 0}},
                    }
                ]
            },
            "Containers[0].Backend.MultiModel.MemoryBudgetInMiB",
        ),
        (
            {"Containers": [{}], "InferenceExecutionConfig": {"Mode": "Parallel"}},
            "InferenceExecutionConfig.Mode: 'Parallel' is not one of",
        ),
        ({"Containers": [{"Colour": "red"}]}, "Containers[0].Colour: unknown key"),
        ({"Containers": [{}], "Extra": 1}, "Extra: unknown key"),
        (
            {"Containers": [{"Backend": {"Protocol": "carrier-pigeon"}}]},
            "Containers[0].Backend.Protocol: 'carrier-pigeon' is not one of 'sagemaker'",
        ),
        (
            {"Containers": [{"Backend": {"Url": "https://remote"}}]},
            "Containers[0].Backend.Url: 'https://remote' does not match",
        ),
        (
            {"Containers": [{"Backend": {"InvocationTimeoutInSeconds": 0}}]},
            "Containers[0].Backend.InvocationTimeoutInSeconds",
        ),
        ({"Containers": [{"Image": "has space"}]}, "Containers[0].Image: 'has space' does not match"),
        ({"ModelName": "-bad", "Containers": [{}]}, "ModelName: '-bad' does not match"),
        ({"EndpointName": "e" * 64, "Containers": [{}]}, "EndpointName: 'eeee"),
    ],
)
def test_each_rule(doc: dict[str, Any], expected: str) -> None:
    found = problems(doc)
    assert any(problem.startswith(expected) or expected in problem for problem in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(direct({"ContainerHostname": "bad_name", "Bogus": 1}, {"Mode": "x"}))
    assert [problem.split(":")[0] for problem in found] == [
        "Containers[0].ContainerHostname",
        "Containers[0].Bogus",
        "Containers[1].Mode",
        "Containers[1].ContainerHostname",
    ]


def test_default_endpoint_name_from_a_stem_that_breaks_the_pattern(tmp_path: Path) -> None:
    path = tmp_path / "my_endpoint.yaml"
    path.write_text("Containers: [{}]\n")
    with pytest.raises(DocumentError, match="the file's stem is the default; set EndpointName"):
        load_endpoint(path)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("e.yaml", "Containers: [\n", "not valid YAML"),
        ("e.json", '{"Containers": ', "not valid JSON"),
        ("e.yaml", "", "expected a mapping at the top, found empty"),
        ("e.yaml", "- a\n- b\n", "expected a mapping at the top, found list"),
    ],
)
def test_unreadable_documents(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DocumentError, match=expected):
        load_endpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="cannot read the file"):
        load_endpoint(tmp_path / "absent.yaml")


def test_json_documents(tmp_path: Path) -> None:
    path = tmp_path / "json-endpoint.json"
    path.write_text(json.dumps(direct({"ContainerHostname": "a"})))
    assert load_endpoint(path).EndpointName == "json-endpoint"
