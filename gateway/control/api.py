"""The control plane's API: the operations boto3's `sagemaker` client calls, in AWS JSON 1.1.

`POST /` with `X-Amz-Target: SageMaker.<Operation>` and a JSON body. The request is checked against
botocore's own model of the operation's input (types, required members, unknown members), then by the
rules SageMaker applies (the endpoint document's, for CreateModel). Answers are JSON with timestamps as
epoch seconds; refusals are 400 with `__type` set to the code botocore maps to its exception class
(`ValidationException`, `ResourceLimitExceeded`, `ResourceInUse`, `ResourceNotFound`). What an endpoint
does once created (start its containers, serve, update, stop) is gateway.control.endpoints'.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import botocore.session

from gateway.async_inference import AsyncConfig
from gateway.control import constraints
from gateway.control.endpoints import Endpoints
from gateway.control.state import COMPONENT, CONFIG, ENDPOINT, MODEL, Resource, State
from gateway.endpoint import Endpoint, parse_endpoint
from gateway.errors import AccessDenied, DocumentError, GatewayError, ValidationError
from gateway.wire import VARIANT_NAME

TARGET_PREFIX = b"SageMaker."
LOCAL_ACCOUNT = "000000000000"  # the account in ARNs unless told (mce up --account): plainly not a real one
DEFAULT_PAGE, MAX_PAGE = 10, 100  # ListX's MaxResults: SageMaker's default and maximum

WHAT = {
    MODEL: "model",
    CONFIG: "endpoint configuration",
    ENDPOINT: "endpoint",
    COMPONENT: "inference component",
}


class ControlError(Exception):
    """A refused control-plane call: HTTP 400 with `__type` = `code`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> bytes:
        return json.dumps({"__type": self.code, "message": self.message}).encode()


def _not_a_number(constant: str) -> float:
    """JSON has no NaN or Infinity (Python's reader takes them): a number must be one."""
    raise ValueError(f"{constant} is not a JSON number")


def invalid(message: str) -> ControlError:
    return ControlError("ValidationException", message)


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlPlane:
    """One region and account's SageMaker, locally. `call` is what the front door hands a control request."""

    def __init__(
        self,
        state: State,
        endpoints: Endpoints,
        *,
        region: str,
        account: str,
        data_roots: Sequence[Path] = (),
    ) -> None:
        """`data_roots`: the folders a local ModelDataUrl may name (the current folder is always one)."""
        self.state = state
        self.data_roots = [Path.cwd().resolve(), *(root.resolve() for root in data_roots)]
        self.endpoints = endpoints
        self.documents: dict[str, Resource] = {}  # endpoints of `mce up DOC`, by lower-cased name
        self.region = region
        self.account = account
        self._service = botocore.session.get_session().get_service_model("sagemaker")
        self._operations: dict[str, Handler] = {
            "CreateModel": self.create_model,
            "DescribeModel": self.describe_model,
            "ListModels": self.list_models,
            "DeleteModel": self.delete_model,
            "CreateEndpointConfig": self.create_endpoint_config,
            "DescribeEndpointConfig": self.describe_endpoint_config,
            "ListEndpointConfigs": self.list_endpoint_configs,
            "DeleteEndpointConfig": self.delete_endpoint_config,
            "CreateEndpoint": self.create_endpoint,
            "DescribeEndpoint": self.describe_endpoint,
            "ListEndpoints": self.list_endpoints,
            "UpdateEndpoint": self.update_endpoint,
            "DeleteEndpoint": self.delete_endpoint,
            "CreateInferenceComponent": self.create_inference_component,
            "DescribeInferenceComponent": self.describe_inference_component,
            "ListInferenceComponents": self.list_inference_components,
            "UpdateInferenceComponent": self.update_inference_component,
            "DeleteInferenceComponent": self.delete_inference_component,
        }

    async def call(
        self, target: bytes | None, body: bytes, authorize: Callable[[str, str], None] | None = None
    ) -> tuple[int, bytes]:
        """(HTTP status, JSON body) for one control request; `authorize(action, resource)` raises unless
        the caller may (gateway.access; None: access is off)."""
        try:
            return 200, json.dumps(await self._call(target, body, authorize)).encode()
        except ControlError as error:
            return error.status, error.body()
        except AccessDenied as denied:
            return 400, ControlError("AccessDeniedException", denied.message).body()

    async def _call(
        self, target: bytes | None, body: bytes, authorize: Callable[[str, str], None] | None
    ) -> dict[str, Any]:
        if target is None or not target.startswith(TARGET_PREFIX):
            raise ControlError(
                "UnknownOperationException",
                "A control-plane request names its operation in X-Amz-Target: SageMaker.<Operation>.",
            )
        name = target[len(TARGET_PREFIX) :].decode("latin-1")
        handler = self._operations.get(name)
        if handler is None:
            known = ", ".join(sorted(self._operations))
            raise ControlError(
                "UnknownOperationException", f"Operation {name} is not served locally; these are: {known}."
            )
        try:
            params = json.loads(body, parse_constant=_not_a_number) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise ControlError("SerializationException", f"The request body is not JSON: {exc}.") from None
        if not isinstance(params, dict):
            raise ControlError("SerializationException", "The request body must be a JSON object.")
        try:  # every constraint of botocore's model, before any side effect
            constraints.check(self._service.operation_model(name).input_shape, params)
        except constraints.SerializationError as exc:
            raise ControlError("SerializationException", str(exc)) from None
        except constraints.ConstraintError as exc:
            raise invalid(str(exc)) from None
        if authorize is not None:
            for resource in self._resources(name, params):  # each of them, before anything is looked up
                authorize(f"sagemaker:{name}", resource)
        return await handler(params)

    def _resources(self, operation: str, params: dict[str, Any]) -> list[str]:
        """The ARNs an operation is authorized on, as IAM does (the Service Authorization Reference's
        resource types for the action): the resource it names, and what it is made from, which
        CreateEndpoint and UpdateEndpoint (the endpoint configuration) and CreateInferenceComponent (its
        model) use; `*` for the List operations."""
        for member, kind in (
            ("InferenceComponentName", COMPONENT),
            ("EndpointName", ENDPOINT),
            ("EndpointConfigName", CONFIG),
            ("ModelName", MODEL),
        ):
            if member in params:
                named = [self.arn(kind, params[member])]
                break
        else:
            return ["*"]
        if operation in ("CreateEndpoint", "UpdateEndpoint"):
            named.append(self.arn(CONFIG, params["EndpointConfigName"]))
        model = (params.get("Specification") or {}).get("ModelName")
        if operation == "CreateInferenceComponent" and model is not None:
            named.append(self.arn(MODEL, model))
        return named

    def absent(self, name: str) -> GatewayError | None:
        """gateway.server.Control: an endpoint that exists but is not serving (yet, or any more)."""
        endpoint = self.state.get(ENDPOINT, name)
        if endpoint is None:
            return None
        reason = f" ({endpoint.failure})" if endpoint.status == "Failed" and endpoint.failure else ""
        return ValidationError(
            f"Endpoint {endpoint.name} of account {self.account} is {endpoint.status}{reason}; it can be "
            "invoked once it is InService."
        )

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def adopt(self, endpoint: Endpoint) -> None:
        """An endpoint `mce up DOC` started from a document: listed and described like the others,
        InService while mce up runs; not updated or deleted through the API."""
        now = time.time()
        name = endpoint.EndpointName
        key = "Containers" if endpoint.Containers is not None else "PrimaryContainer"
        images = [{"Image": container.Image or ""} for container in endpoint.containers]
        model = {key: images if key == "Containers" else images[0]}
        deployed = {
            "config": {"ProductionVariants": [{"VariantName": VARIANT_NAME, "ModelName": name}]},
            "models": {VARIANT_NAME: model},
        }
        self.documents[name.lower()] = Resource(
            ENDPOINT, name, self.arn(ENDPOINT, name), now, now, {}, "InService", deployed=deployed
        )

    def _existing(self, kind: str, name: str) -> Resource:
        resource = self.state.get(kind, name)
        if resource is None and kind == ENDPOINT:
            resource = self.documents.get(name.lower())
        if resource is None:
            raise invalid(f'Could not find {WHAT[kind]} "{self.arn(kind, name)}".')
        return resource

    def _changeable(self, name: str) -> Resource:
        endpoint = self._existing(ENDPOINT, name)
        if endpoint.name.lower() in self.documents:
            raise invalid(
                f"Endpoint {endpoint.name} was started from an endpoint document (mce up DOC): it runs while "
                "mce up runs, and is not updated or deleted through the API."
            )
        return endpoint

    def _new(self, kind: str, name: str, request: dict[str, Any]) -> Resource:
        if self.state.get(kind, name) is not None or (kind == ENDPOINT and name.lower() in self.documents):
            raise invalid(f'Cannot create already existing {WHAT[kind]} "{self.arn(kind, name)}".')
        now = time.time()
        return Resource(kind, name, self.arn(kind, name), now, now, request)

    # models
    async def create_model(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelName"]
        containers = params.get("Containers")  # at most MAX_CONTAINERS: the model's list constraint
        if (containers is None) == (params.get("PrimaryContainer") is None):
            raise invalid("A model has either PrimaryContainer or Containers (one of the two).")
        try:  # the rules an endpoint document already enforces: a model is most of one
            endpoint = parse_endpoint(params, source="CreateModel", default_name=name)
        except DocumentError as exc:
            issues = (f"{i.path}: {i.message}" if i.path else i.message for i in exc.issues)
            raise invalid("; ".join(issues)) from None
        for container in endpoint.containers:
            self._check_local(container.ModelDataUrl, "ModelDataUrl")
            self._check_local(
                container.Environment.get("SAGEMAKER_SUBMIT_DIRECTORY"), "SAGEMAKER_SUBMIT_DIRECTORY"
            )
        resource = self._new(MODEL, name, params)
        self.state.add(resource)
        return {"ModelArn": resource.arn}

    def _check_local(self, url: str | None, field: str) -> None:
        """A local path (or file:// URL) names model data only inside the folder mce up was started in or a
        --data-root: a caller of the API must not choose what of this machine a container reads."""
        if url is None:
            return
        parts = urlsplit(url)
        if parts.scheme not in ("", "file"):
            return  # s3:// and https:// are read over the network, as SageMaker reads them
        path = Path(unquote(parts.path) if parts.scheme == "file" else url)
        resolved = (path if path.is_absolute() else Path.cwd() / path).resolve()
        if not any(resolved.is_relative_to(root) for root in self.data_roots):
            roots = ", ".join(str(root) for root in self.data_roots)
            raise invalid(
                f"{field} {url} is a local path outside the folders this local SageMaker reads model data "
                f"from ({roots}; mce up --data-root DIR adds one). Use an s3:// or https:// URL, or a path "
                "inside one of them."
            )

    async def describe_model(self, params: dict[str, Any]) -> dict[str, Any]:
        model = self._existing(MODEL, params["ModelName"])
        request = model.request
        answer = {
            key: request[key]
            for key in (
                "PrimaryContainer",
                "Containers",
                "InferenceExecutionConfig",
                "ExecutionRoleArn",
                "VpcConfig",
                "EnableNetworkIsolation",
            )
            if key in request
        }
        return {"ModelName": model.name, "ModelArn": model.arn, "CreationTime": model.created, **answer}

    async def list_models(self, params: dict[str, Any]) -> dict[str, Any]:
        page, token = self._page(self.state.all(MODEL), params)
        models = [{"ModelName": m.name, "ModelArn": m.arn, "CreationTime": m.created} for m in page]
        return {"Models": models, **token}

    async def delete_model(self, params: dict[str, Any]) -> dict[str, Any]:
        model = self._existing(MODEL, params["ModelName"])
        busy = self.endpoints.deploying(model=model.name)
        if busy:
            raise ControlError(
                "ResourceInUse", f"Model {model.name} is being deployed to endpoint {busy}; delete it after."
            )
        self.state.remove(MODEL, model.name)  # running endpoints keep what they were deployed with
        return {}

    # endpoint configurations
    async def create_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        variants = params["ProductionVariants"]
        if not variants:
            raise invalid("ProductionVariants must name at least one variant.")
        names = [variant["VariantName"] for variant in variants]
        if len({n.lower() for n in names}) != len(names):
            raise invalid(f"VariantName must be unique within an endpoint configuration: {', '.join(names)}.")
        with_models = [variant for variant in variants if variant.get("ModelName") is not None]
        if with_models and len(with_models) != len(variants):
            raise invalid(
                "Either every production variant names a ModelName, or none does (an endpoint for "
                "inference components)."
            )
        for variant in with_models:
            self._existing(MODEL, variant["ModelName"])
        for variant in variants:
            weight = variant.get("InitialVariantWeight", 1.0)
            if weight < 0:
                raise invalid(f"Variant {variant['VariantName']}: InitialVariantWeight must be 0 or more.")
        asynchronous = params.get("AsyncInferenceConfig")
        if asynchronous is not None:
            try:
                AsyncConfig.from_api(asynchronous)
            except ValidationError as exc:
                raise invalid(exc.message) from None
        resource = self._new(CONFIG, name, params)
        self.state.add(resource)
        return {"EndpointConfigArn": resource.arn}

    async def describe_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        config = self._existing(CONFIG, params["EndpointConfigName"])
        request = {key: value for key, value in config.request.items() if key != "Tags"}
        return {**request, "EndpointConfigArn": config.arn, "CreationTime": config.created}

    async def list_endpoint_configs(self, params: dict[str, Any]) -> dict[str, Any]:
        page, token = self._page(self.state.all(CONFIG), params)
        configs = [
            {"EndpointConfigName": c.name, "EndpointConfigArn": c.arn, "CreationTime": c.created}
            for c in page
        ]
        return {"EndpointConfigs": configs, **token}

    async def delete_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        config = self._existing(CONFIG, params["EndpointConfigName"])
        busy = self.endpoints.deploying(config=config.name)
        if busy:
            raise ControlError(
                "ResourceInUse",
                f"Endpoint configuration {config.name} is being deployed to endpoint {busy}; "
                "delete it after.",
            )
        self.state.remove(CONFIG, config.name)
        return {}

    # endpoints
    def _snapshot(self, config_name: str) -> dict[str, Any]:
        """What an endpoint is deployed from: its configuration and each variant's model, as they are now."""
        config = self._existing(CONFIG, config_name)
        models: dict[str, Any] = {}
        for variant in config.request["ProductionVariants"]:
            if variant.get("ModelName") is None:  # an endpoint for inference components
                models[variant["VariantName"]] = None
                continue
            model = self.state.get(MODEL, variant["ModelName"])
            if model is None:
                raise invalid(
                    f'Could not find model "{self.arn(MODEL, variant["ModelName"])}" '
                    f"(variant {variant['VariantName']} of {config.name})."
                )
            models[variant["VariantName"]] = model.request
        return {"config": {**config.request, "EndpointConfigName": config.name}, "models": models}

    async def create_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        snapshot = self._snapshot(params["EndpointConfigName"])
        resource = self._new(ENDPOINT, name, params)
        resource.status = "Creating"
        resource.config = snapshot["config"]["EndpointConfigName"]
        resource.deployed = snapshot
        self.state.add(resource)
        self.endpoints.create(name)
        return {"EndpointArn": resource.arn}

    async def describe_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        self._existing(ENDPOINT, name)
        await self.endpoints.settled(name)
        endpoint = self._existing(ENDPOINT, name)  # it may have gone meanwhile
        answer: dict[str, Any] = {
            "EndpointName": endpoint.name,
            "EndpointArn": endpoint.arn,
            **({"EndpointConfigName": endpoint.config} if endpoint.config else {}),
            "EndpointStatus": endpoint.status,
            "CreationTime": endpoint.created,
            "LastModifiedTime": endpoint.modified,
        }
        variants = self.endpoints.variants(endpoint)
        if variants:
            answer["ProductionVariants"] = variants
        if endpoint.failure:
            answer["FailureReason"] = endpoint.failure
        return answer

    async def list_endpoints(self, params: dict[str, Any]) -> dict[str, Any]:
        endpoints = [*self.state.all(ENDPOINT), *self.documents.values()]
        status = params.get("StatusEquals")
        if status is not None:
            endpoints = [e for e in endpoints if e.status == status]
        page, token = self._page(endpoints, params)
        summaries = [
            {
                "EndpointName": e.name,
                "EndpointArn": e.arn,
                "CreationTime": e.created,
                "LastModifiedTime": e.modified,
                "EndpointStatus": e.status,
            }
            for e in page
        ]
        return {"Endpoints": summaries, **token}

    async def update_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._changeable(params["EndpointName"])
        if endpoint.status != "InService":
            raise invalid(
                f'Cannot update in-progress endpoint "{endpoint.arn}".'
                if endpoint.status in ("Creating", "Updating", "Deleting")
                else f'Cannot update endpoint "{endpoint.arn}": it is {endpoint.status}.'
            )
        snapshot = self._snapshot(params["EndpointConfigName"])
        self.endpoints.update(endpoint.name, snapshot)
        return {"EndpointArn": endpoint.arn}

    async def delete_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._changeable(params["EndpointName"])
        components = self._components_of(endpoint.name)
        if components:
            raise invalid(
                f"Endpoint {endpoint.name} has inference components "
                f"({', '.join(c.name for c in components)}): delete them first."
            )
        self.endpoints.delete(endpoint.name)
        return {}

    # inference components
    def _components_of(self, endpoint: str) -> list[Resource]:
        return [c for c in self.state.all(COMPONENT) if c.request["EndpointName"].lower() == endpoint.lower()]

    def _component_snapshot(self, endpoint: Resource, params: dict[str, Any]) -> dict[str, Any]:
        """What a component runs: its specification, its model's containers as they are now (for a
        ModelName) or its Container, on which variant."""
        spec = params.get("Specification")
        if spec is None or (spec.get("ModelName") is None) == (spec.get("Container") is None):
            raise invalid("Specification names either a ModelName or a Container (one of the two).")
        deployed = endpoint.deployed or {}
        variants = [v["VariantName"] for v in deployed.get("config", {}).get("ProductionVariants", [])]
        if any(deployed.get("models", {}).get(v) is not None for v in variants):
            raise invalid(
                f"Endpoint {endpoint.name} serves models; inference components go on an endpoint whose "
                "production variants name no ModelName."
            )
        variant = params.get("VariantName") or (variants[0] if variants else None)
        if variant not in variants:
            raise invalid(
                f"Endpoint {endpoint.name} has no production variant {variant} "
                f"(it has: {', '.join(variants)})."
            )
        model = None
        if spec.get("ModelName") is not None:
            model = self._existing(MODEL, spec["ModelName"]).request
        return {"specification": spec, "model": model, "variant": variant}

    async def create_inference_component(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["InferenceComponentName"]
        endpoint = self._existing(ENDPOINT, params["EndpointName"])
        if endpoint.status not in ("InService", "Creating", "Updating"):
            raise invalid(
                f'Cannot add an inference component to endpoint "{endpoint.arn}": it is {endpoint.status}.'
            )
        snapshot = self._component_snapshot(endpoint, params)
        resource = self._new(COMPONENT, name, {**params, "EndpointName": endpoint.name})
        resource.status = "Creating"
        resource.deployed = snapshot
        self.state.add(resource)
        self.endpoints.create_component(name)
        return {"InferenceComponentArn": resource.arn}

    async def describe_inference_component(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["InferenceComponentName"]
        self._existing(COMPONENT, name)
        await self.endpoints.settled(name, COMPONENT)
        component = self._existing(COMPONENT, name)
        request = component.request
        deployed = component.deployed or {}
        spec = dict(deployed.get("specification", request.get("Specification", {})))
        container = spec.pop("Container", None)
        if container is not None:
            image = container.get("Image", "")
            spec["Container"] = {
                **{k: v for k, v in container.items() if k != "Image"},
                "DeployedImage": {
                    "SpecifiedImage": image,
                    "ResolvedImage": image,
                    "ResolutionTime": component.created,
                },
            }
        answer: dict[str, Any] = {
            "InferenceComponentName": component.name,
            "InferenceComponentArn": component.arn,
            "EndpointName": request["EndpointName"],
            "EndpointArn": self.arn(ENDPOINT, request["EndpointName"]),
            "VariantName": deployed.get("variant", request.get("VariantName", VARIANT_NAME)),
            "Specification": spec,
            # one local copy, whatever CopyCount asks (README)
            "RuntimeConfig": {
                "DesiredCopyCount": 1,
                "CurrentCopyCount": 1 if component.status == "InService" else 0,
            },
            "CreationTime": component.created,
            "LastModifiedTime": component.modified,
            "InferenceComponentStatus": component.status,
        }
        if component.failure:
            answer["FailureReason"] = component.failure
        return answer

    async def list_inference_components(self, params: dict[str, Any]) -> dict[str, Any]:
        components = self.state.all(COMPONENT)
        status, endpoint, variant = (
            params.get("StatusEquals"),
            params.get("EndpointNameEquals"),
            params.get("VariantNameEquals"),
        )
        if status is not None:
            components = [c for c in components if c.status == status]
        if endpoint is not None:
            components = [c for c in components if c.request["EndpointName"].lower() == endpoint.lower()]
        if variant is not None:
            components = [c for c in components if (c.deployed or {}).get("variant") == variant]
        page, token = self._page(components, params)
        summaries = [
            {
                "InferenceComponentName": c.name,
                "InferenceComponentArn": c.arn,
                "EndpointName": c.request["EndpointName"],
                "EndpointArn": self.arn(ENDPOINT, c.request["EndpointName"]),
                "VariantName": (c.deployed or {}).get("variant", VARIANT_NAME),
                "InferenceComponentStatus": c.status,
                "CreationTime": c.created,
                "LastModifiedTime": c.modified,
            }
            for c in page
        ]
        return {"InferenceComponents": summaries, **token}

    async def update_inference_component(self, params: dict[str, Any]) -> dict[str, Any]:
        component = self._existing(COMPONENT, params["InferenceComponentName"])
        if component.status != "InService":
            raise invalid(f'Cannot update inference component "{component.arn}": it is {component.status}.')
        if params.get("Specification") is None:  # only the copy count changes: one local copy either way
            return {"InferenceComponentArn": component.arn}
        endpoint = self._existing(ENDPOINT, component.request["EndpointName"])
        snapshot = self._component_snapshot(endpoint, {**component.request, **params})
        self.endpoints.update_component(component.name, snapshot)
        return {"InferenceComponentArn": component.arn}

    async def delete_inference_component(self, params: dict[str, Any]) -> dict[str, Any]:
        component = self._existing(COMPONENT, params["InferenceComponentName"])
        self.endpoints.delete_component(component.name)
        return {}

    # lists
    def _page(
        self, resources: list[Resource], params: dict[str, Any]
    ) -> tuple[list[Resource], dict[str, str]]:
        """Filter, sort and cut a list as SageMaker's ListX do (NameContains, CreationTime and
        LastModifiedTime bounds, SortBy Name|CreationTime|Status, newest first by default, MaxResults, an
        opaque NextToken)."""
        contains = params.get("NameContains")
        if contains is not None:
            resources = [r for r in resources if contains.lower() in r.name.lower()]
        for key, field, before in (
            ("CreationTimeBefore", "created", True),
            ("CreationTimeAfter", "created", False),
            ("LastModifiedTimeBefore", "modified", True),
            ("LastModifiedTimeAfter", "modified", False),
        ):
            bound = params.get(key)
            if bound is not None:
                bound = float(bound)
                resources = [
                    r
                    for r in resources
                    if (getattr(r, field) < bound if before else getattr(r, field) > bound)
                ]
        order = params.get("SortBy", "CreationTime")
        sort_key: Callable[[Resource], Any] = {
            "Name": lambda r: r.name.lower(),
            "Status": lambda r: r.status or "",
        }.get(order, lambda r: r.created)
        resources = sorted(
            resources, key=sort_key, reverse=params.get("SortOrder", "Descending") == "Descending"
        )
        size = params.get("MaxResults", DEFAULT_PAGE)
        if not 1 <= size <= MAX_PAGE:
            raise invalid(f"MaxResults must be between 1 and {MAX_PAGE}; it is {size}.")
        start = 0
        token = params.get("NextToken")
        if token is not None:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except (ValueError, UnicodeDecodeError):
                raise invalid("NextToken is not one this service issued.") from None
        page = resources[start : start + size]
        if start + size >= len(resources):
            return page, {}
        return page, {"NextToken": base64.urlsafe_b64encode(str(start + size).encode()).decode()}
