"""The control plane checks what AWS checks, in AWS's words (issue 27): botocore's model of every served
operation is walked and each constraint of each member broken once; names that would become paths are
refused before anything is made of them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import regex
from botocore.exceptions import ClientError
from botocore.model import ListShape, MapShape, Shape, StructureShape
from test_local_sagemaker import ROLE, LocalSageMaker, control_call, deploy

SERVED = [
    "CreateModel",
    "DescribeModel",
    "ListModels",
    "DeleteModel",
    "CreateEndpointConfig",
    "DescribeEndpointConfig",
    "ListEndpointConfigs",
    "DeleteEndpointConfig",
    "CreateEndpoint",
    "DescribeEndpoint",
    "ListEndpoints",
    "UpdateEndpoint",
    "DeleteEndpoint",
    "CreateInferenceComponent",
    "DescribeInferenceComponent",
    "ListInferenceComponents",
    "UpdateInferenceComponent",
    "DeleteInferenceComponent",
]
# strings that break most patterns: a URL of another scheme (a ModelDataUrl may also be a local path, D35),
# a NUL, a path, spaces, a line break, nothing
BREAKERS = ["ftp://../\x00 x", "\n", "", "a" * 3000]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSageMaker]:
    server = LocalSageMaker(tmp_path_factory.mktemp("constraints"))
    yield server
    try:
        server.stop()
    finally:
        server.proc.kill()


def call(url: str, operation: str, params: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
    return control_call(url, operation, params if isinstance(params, bytes) else json.dumps(params).encode())


def broken(shape: Shape) -> Iterator[tuple[object, str]]:
    """(a value, the phrase AWS's message has for it) for each constraint of a scalar, list or map shape."""
    meta, kind = shape.metadata, shape.type_name
    if kind in ("integer", "long", "float", "double"):
        if "min" in meta:
            yield meta["min"] - 1, f"Member must have value greater than or equal to {meta['min']:g}"
        if "max" in meta:
            yield meta["max"] + 1, f"Member must have value less than or equal to {meta['max']:g}"
        return
    if kind not in ("string", "list", "map"):
        return
    filler: Any = {"string": "a", "list": [], "map": {}}[kind]
    if meta.get("min", 0) > 0:
        short = filler * (meta["min"] - 1) if kind == "string" else filler
        yield short, f"Member must have length greater than or equal to {meta['min']}"
    if "max" in meta and meta["max"] < 2000:
        count = meta["max"] + 1
        long: Any = (
            "a" * count
            if kind == "string"
            else [None] * count
            if kind == "list"
            else {f"k{i}": None for i in range(count)}
        )
        yield long, f"Member must have length less than or equal to {meta['max']}"
    pattern = meta.get("pattern")
    if pattern is not None:
        value = next((b for b in BREAKERS if regex.fullmatch(pattern, b) is None), None)
        if value is not None:
            yield value, "Member must satisfy regular expression pattern: ^" + pattern.removeprefix("^")
    if kind == "string" and shape.enum:
        yield "not-one-of-them", f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"


def cases(shape: StructureShape) -> Iterator[tuple[dict[str, Any], str]]:
    """For each constraint reachable from an operation's input: a request that breaks it, and the part of
    the message that says so (its member path as AWS writes it)."""
    seen: set[tuple[str, str]] = set()

    def walk(shape: Shape, path: str, place: Any) -> Iterator[tuple[dict[str, Any], str]]:
        if isinstance(shape, StructureShape):
            for name, member in shape.members.items():
                where = f"{path}.{name[0].lower()}{name[1:]}" if path else f"{name[0].lower()}{name[1:]}"
                yield from walk(member, where, lambda value, name=name: place({name: value}))
            return
        if (shape.name, path) in seen or path.count(".") > 12:
            return
        seen.add((shape.name, path))
        for value, phrase in broken(shape):
            yield place(value), f"Value '{shown(value)}' at '{path}' failed to satisfy constraint: {phrase}"
        if isinstance(shape, ListShape):
            yield from walk(shape.member, f"{path}.1.member", lambda value: place([value]))
        elif isinstance(shape, MapShape):
            for part, element in (("keys", shape.key), ("values", shape.value)):
                for value, phrase in broken(element):
                    entry = {value: "v"} if part == "keys" else {"k": value}
                    if part == "keys" and not isinstance(value, str):
                        continue
                    yield (
                        place(entry),
                        f"Value at '{path}' failed to satisfy constraint: "
                        f"Map {part} must satisfy constraint: [{phrase}",
                    )

    yield from walk(shape, "", lambda value: value)


def shown(value: object) -> str:
    if isinstance(value, list):
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return f"{{{len(value)} entries}}"
    return str(value)


def test_every_constraint_of_every_served_operation_is_checked_in_awss_words(local: LocalSageMaker) -> None:
    model = botocore.session.get_session().get_service_model("sagemaker")
    tried = 0
    for operation in SERVED:
        for params, expected in cases(model.operation_model(operation).input_shape):
            status, answer = call(local.url, operation, params)
            assert status == 400 and answer["__type"] == "ValidationException", (operation, params, answer)
            assert expected in answer["message"], (operation, expected, answer["message"])
            tried += 1
    assert tried > 300, tried  # the walk reached the nested members (productionVariants.1.member...)
    sm = local.sagemaker()
    assert sm.list_models()["Models"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_endpoints()["Endpoints"] == []


def test_published_messages_word_for_word(local: LocalSageMaker) -> None:
    """The messages AWS is quoted giving (aws/amazon-sagemaker-examples#2228, the issue's own probe)."""
    _, answer = call(local.url, "CreateEndpoint", {"EndpointName": "bad_ep", "EndpointConfigName": "c"})
    assert answer["message"] == (
        "1 validation error detected: Value 'bad_ep' at 'endpointName' failed to satisfy constraint: Member "
        "must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
    )
    name = "ENTER MODEL NAME" * 5
    _, answer = call(
        local.url,
        "CreateEndpointConfig",
        {"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "v", "ModelName": name}]},
    )
    assert answer["message"] == (
        f"2 validation errors detected: Value '{name}' at 'productionVariants.1.member.modelName' failed to "
        "satisfy constraint: Member must have length less than or equal to 63; "
        f"Value '{name}' at 'productionVariants.1.member.modelName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?"
    )
    sm = local.sagemaker()
    with pytest.raises(ClientError) as many:  # the list's own constraint, as AWS: not ResourceLimitExceeded
        sm.create_model(
            ModelName="many",
            ExecutionRoleArn=ROLE,
            Containers=[{"ContainerHostname": f"c{i}", "Image": "test/echo:1"} for i in range(16)],
            InferenceExecutionConfig={"Mode": "Direct"},
        )
    assert many.value.response["Error"]["Code"] == "ValidationException"
    assert (
        "at 'containers' failed to satisfy constraint: Member must have length less than or equal to 15"
        in (many.value.response["Error"]["Message"])
    )


@pytest.mark.parametrize(
    "variant",
    ["../../x", "/tmp/victim", "a\x00b", "a" * 300, "a/../..", "."],
)
def test_names_that_would_be_paths_are_refused_and_nothing_leaves_state(
    local: LocalSageMaker, variant: str
) -> None:
    """boto3 sends these (botocore checks types and minimum lengths only); nothing is created, and no
    folder appears outside --state."""
    sm = local.sagemaker()
    around = set(os.listdir(local.state.parent)) | {"mce.db"}
    with pytest.raises(ClientError) as refused:
        sm.create_endpoint_config(
            EndpointConfigName="../escape",
            ProductionVariants=[{"VariantName": variant, "ModelName": "m", "InstanceType": "ml.bogus"}],
        )
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert " validation errors detected: Value '../escape' at 'endpointConfigName'" in error["Message"]
    assert "at 'productionVariants.1.member.variantName' failed to satisfy constraint" in error["Message"]
    assert "at 'productionVariants.1.member.instanceType' failed" in error["Message"]
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert set(os.listdir(local.state.parent)) <= around


def test_weights_that_are_not_numbers_or_add_up_past_the_float_maximum(local: LocalSageMaker) -> None:
    status, answer = call(
        local.url,
        "CreateEndpointConfig",
        b'{"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "v", "ModelName": "m", '
        b'"InitialVariantWeight": Infinity}]}',
    )
    assert (status, answer["__type"]) == (400, "SerializationException"), answer
    sm, runtime = local.sagemaker(), local.runtime()
    deploy(sm, "huge", ("blue", "test/echo:1", 1e308), ("green", "test/french:1", 1e308))
    sm.get_waiter("endpoint_in_service").wait(EndpointName="huge", WaiterConfig={"Delay": 1})
    variants = {
        runtime.invoke_endpoint(EndpointName="huge", Body=b"{}")["InvokedProductionVariant"]
        for _ in range(40)
    }
    assert variants == {"blue", "green"}


def test_local_model_data_outside_the_data_roots_is_refused(local: LocalSageMaker, tmp_path: Path) -> None:
    sm = local.sagemaker()
    for url in ("/etc", "file:///etc/hostname", str(tmp_path / "model.tar.gz"), "../../../../../etc"):
        with pytest.raises(ClientError) as refused:
            sm.create_model(
                ModelName="outside",
                ExecutionRoleArn=ROLE,
                PrimaryContainer={"Image": "x", "ModelDataUrl": url},
            )
        assert refused.value.response["Error"]["Code"] == "ValidationException"
        assert (
            "outside the folders this local SageMaker reads model data from"
            in (refused.value.response["Error"]["Message"])
        )
    inside = local.state.parent / "model"
    inside.mkdir(exist_ok=True)
    sm.create_model(
        ModelName="inside",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": "x", "ModelDataUrl": str(inside)},
    )
