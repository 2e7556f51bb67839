"""The control plane's API: the operations boto3's `sagemaker` client calls, in AWS JSON 1.1.

`POST /` with `X-Amz-Target: SageMaker.<Operation>` and a JSON body. The request is checked against
botocore's own model of the operation's input (gateway.control.constraints), then by the rules SageMaker
applies (the endpoint document's, for CreateModel). Answers are JSON with timestamps as epoch seconds;
refusals are gateway.errors' ControlError family, which the front door frames (`__type` = the code botocore
maps to its exception class). Resources are gateway.control.resources' types, kept by
gateway.control.state; what a hosted resource does once created (start its containers, serve, update, stop)
is gateway.control.endpoints'.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import botocore.session

from gateway.async_inference import AsyncConfig
from gateway.capture import CaptureConfig
from gateway.control import constraints
from gateway.control.endpoints import Endpoints
from gateway.control.resources import (
    ComponentResource,
    ComponentSpec,
    ConfigResource,
    Deployed,
    EndpointResource,
    Hosted,
    Kind,
    ModelResource,
    PlannedVariant,
    Resource,
    Status,
    containers_of,
)
from gateway.control.shifting import Shift
from gateway.control.state import State
from gateway.endpoint import Endpoint, parse_endpoint
from gateway.errors import (
    AccessDenied,
    DocumentError,
    GatewayError,
    InvalidRequest,
    PolicyDenied,
    SerializationFailure,
    UnknownControlOperation,
    ValidationError,
)
from gateway.wire import VARIANT_NAME

TARGET_PREFIX = b"SageMaker."
DEFAULT_PAGE, MAX_PAGE = 10, 100  # ListX's MaxResults: SageMaker's default and maximum
TAGS_PAGE = 50  # ListTags' MaxResults: its model's minimum, and SageMaker's default
MAX_TAGS = 50  # tags on one resource (the model's TagList maximum)
READS = ("Describe", "List")  # operations that write nothing

R = TypeVar("R", bound=Resource)


def _not_a_number(constant: str) -> float:
    """JSON has no NaN or Infinity (Python's reader takes them): a number must be one."""
    raise ValueError(f"{constant} is not a JSON number")


# A request, as the JSON body has it once botocore's input shape has checked it (gateway.control.constraints),
# and an answer, as the output shape has it: the wire's JSON objects, read by member name.
Params = dict[str, Any]
Answer = dict[str, Any]
Handler = Callable[[Params], Awaitable[Answer]]


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
            "UpdateEndpointWeightsAndCapacities": self.update_endpoint_weights_and_capacities,
            "DeleteEndpoint": self.delete_endpoint,
            "CreateInferenceComponent": self.create_inference_component,
            "DescribeInferenceComponent": self.describe_inference_component,
            "ListInferenceComponents": self.list_inference_components,
            "UpdateInferenceComponent": self.update_inference_component,
            "DeleteInferenceComponent": self.delete_inference_component,
            "AddTags": self.add_tags,
            "ListTags": self.list_tags,
            "DeleteTags": self.delete_tags,
        }

    async def call(
        self, target: bytes | None, body: bytes, authorize: Callable[[str, str], None] | None = None
    ) -> bytes:
        """The JSON answer to one control request, or a ControlError; `authorize(action, resource)`
        raises unless the caller may (gateway.access; None: access is off)."""
        try:
            return json.dumps(await self._call(target, body, authorize)).encode()
        except AccessDenied as denied:
            raise PolicyDenied(denied.message) from None

    async def _call(
        self, target: bytes | None, body: bytes, authorize: Callable[[str, str], None] | None
    ) -> dict[str, Any]:
        if target is None or not target.startswith(TARGET_PREFIX):
            raise UnknownControlOperation(
                "A control-plane request names its operation in X-Amz-Target: SageMaker.<Operation>."
            )
        name = target[len(TARGET_PREFIX) :].decode("latin-1")
        handler = self._operations.get(name)
        if handler is None:
            known = ", ".join(sorted(self._operations))
            raise UnknownControlOperation(f"Operation {name} is not served locally; these are: {known}.")
        try:
            params = json.loads(body, parse_constant=_not_a_number) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise SerializationFailure(f"The request body is not JSON: {exc}.") from None
        if not isinstance(params, dict):
            raise SerializationFailure("The request body must be a JSON object.")
        try:  # every constraint of botocore's model, before any side effect
            constraints.check(self._service.operation_model(name).input_shape, params)
        except constraints.SerializationError as exc:
            raise SerializationFailure(str(exc)) from None
        except constraints.ConstraintError as exc:
            raise InvalidRequest(str(exc)) from None
        if authorize is not None:
            for resource in self._resources(name, params):  # each of them, before anything is looked up
                authorize(f"sagemaker:{name}", resource)
        if name.startswith(READS):
            return await handler(params)
        with self.state.transaction():  # all of a call's writes, or none (no await inside: D25)
            return await handler(params)

    def _resources(self, operation: str, params: Params) -> list[str]:
        """The ARNs an operation is authorized on, as IAM does (the Service Authorization Reference's
        resource types for the action): the resource it names, and what it is made from, which
        CreateEndpoint and UpdateEndpoint (the endpoint configuration) and CreateInferenceComponent (its
        model) use; `*` for the List operations."""
        if "ResourceArn" in params:  # the tagging operations
            return [params["ResourceArn"]]
        for member, kind in (
            ("InferenceComponentName", Kind.COMPONENT),
            ("EndpointName", Kind.ENDPOINT),
            ("EndpointConfigName", Kind.CONFIG),
            ("ModelName", Kind.MODEL),
        ):
            if member in params:
                named = [self.arn(kind, params[member])]
                break
        else:
            return ["*"]
        if operation in ("CreateEndpoint", "UpdateEndpoint"):
            named.append(self.arn(Kind.CONFIG, params["EndpointConfigName"]))
        model = (params.get("Specification") or {}).get("ModelName")
        if operation == "CreateInferenceComponent" and model is not None:
            named.append(self.arn(Kind.MODEL, model))
        return named

    def absent(self, name: str) -> GatewayError | None:
        """gateway.frontdoor.Control: an endpoint that exists but is not serving (yet, or any more). Names
        are matched exactly, as the runtime matches them: `b-case` is not endpoint `b-Case`."""
        endpoint = self.state.get(EndpointResource, name)
        if endpoint is None or endpoint.name != name:
            return None
        reason = f" ({endpoint.failure})" if endpoint.status is Status.FAILED and endpoint.failure else ""
        return ValidationError(
            f"Endpoint {endpoint.name} of account {self.account} is {endpoint.status}{reason}; it can be "
            "invoked once it is InService."
        )

    def containers(self, name: str) -> list[dict[str, object]] | None:
        """gateway.frontdoor.Control: the running containers of endpoint `name` (its variants', then its
        inference components'), each with its variant and state and last lines; None for no such endpoint."""
        endpoint = self.state.get(EndpointResource, name)
        if endpoint is None or endpoint.name != name:
            return None
        keyed = [(r.variant, r) for r in self.endpoints.running_for(endpoint)]
        for component in self.state.all(ComponentResource):
            if component.endpoint.lower() == name.lower():
                running = self.endpoints.running_for(component)
                keyed += [(f"{r.variant}/{component.name}", r) for r in running]
        return [{"variant": variant, **row} for variant, r in keyed for row in r.deployment.containers()]

    def arn(self, kind: Kind, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def adopt(self, endpoint: Endpoint) -> None:
        """An endpoint `mce up DOC` started from a document: listed and described like the others,
        InService while mce up runs; not updated or deleted through the API."""
        now = time.time()
        name = endpoint.EndpointName
        key = "Containers" if endpoint.Containers is not None else "PrimaryContainer"
        images = [{"Image": container.Image or ""} for container in endpoint.containers]
        model = {"ModelName": name, key: images if key == "Containers" else images[0]}
        config = {"ProductionVariants": [{"VariantName": VARIANT_NAME, "ModelName": name}]}
        resource = EndpointResource(name, self.arn(Kind.ENDPOINT, name), now, now, {}, Status.IN_SERVICE)
        resource.deployed = Deployed(name, config, {VARIANT_NAME: model})
        resource.document = True
        self.state.add(resource)

    def _existing(self, cls: type[R], name: str) -> R:
        resource = self.state.get(cls, name)
        if resource is None:
            raise InvalidRequest(f'Could not find {cls.kind.what} "{self.arn(cls.kind, name)}".')
        return resource

    def _changeable(self, name: str) -> EndpointResource:
        endpoint = self._existing(EndpointResource, name)
        if endpoint.document:
            raise InvalidRequest(
                f"Endpoint {endpoint.name} was started from an endpoint document (mce up DOC): it runs while "
                "mce up runs, and is not updated or deleted through the API."
            )
        return endpoint

    def _new(self, cls: type[R], name: str, params: Params) -> R:
        """A resource of this kind named `name`, not yet stored; its tags are stored with `_store`."""
        if self.state.get(cls, name) is not None:
            raise InvalidRequest(
                f'Cannot create already existing {cls.kind.what} "{self.arn(cls.kind, name)}".'
            )
        now = time.time()
        request = {key: value for key, value in params.items() if key != "Tags"}
        return cls(name, self.arn(cls.kind, name), now, now, request)

    def _tagged(self, resource: Resource, params: Params) -> None:
        tags = params.get("Tags")
        if tags:
            self.state.tag(resource.arn, tags)

    # models
    async def create_model(self, params: Params) -> Answer:
        name = params["ModelName"]
        if (params.get("Containers") is None) == (params.get("PrimaryContainer") is None):
            raise InvalidRequest("A model has either PrimaryContainer or Containers (one of the two).")
        try:  # the rules an endpoint document already enforces: a model is most of one
            endpoint = parse_endpoint(
                {**params, "EndpointName": name}, source="CreateModel", default_name=name
            )
        except DocumentError as exc:  # in the API's words: the document's EndpointName is the ModelName
            paths = (("ModelName" if i.path == "EndpointName" else i.path) for i in exc.issues)
            issues = (
                f"{path}: {i.message}" if path else i.message
                for path, i in zip(paths, exc.issues, strict=True)
            )
            raise InvalidRequest("; ".join(issues)) from None
        for container in endpoint.containers:
            self._check_local(container.ModelDataUrl, "ModelDataUrl")
            self._check_local(
                container.Environment.get("SAGEMAKER_SUBMIT_DIRECTORY"), "SAGEMAKER_SUBMIT_DIRECTORY"
            )
        model = self._new(ModelResource, name, params)
        self.state.add(model)
        self._tagged(model, params)
        return {"ModelArn": model.arn}

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
            raise InvalidRequest(
                f"{field} {url} is a local path outside the folders this local SageMaker reads model data "
                f"from ({roots}; mce up --data-root DIR adds one). Use an s3:// or https:// URL, or a path "
                "inside one of them."
            )

    async def describe_model(self, params: Params) -> Answer:
        model = self._existing(ModelResource, params["ModelName"])
        return {
            **self._echo("DescribeModel", "CreateModel", model.request),
            "ModelName": model.name,
            "ModelArn": model.arn,
            "CreationTime": model.created,
        }

    async def list_models(self, params: Params) -> Answer:
        page, token = self._page(self.state.all(ModelResource), params)
        models = [{"ModelName": m.name, "ModelArn": m.arn, "CreationTime": m.created} for m in page]
        return {"Models": models, **token}

    async def delete_model(self, params: Params) -> Answer:
        # endpoints created or updated from it keep what they were deployed with, as on SageMaker
        self.state.remove(self._existing(ModelResource, params["ModelName"]))
        return {}

    # endpoint configurations
    async def create_endpoint_config(self, params: Params) -> Answer:
        name = params["EndpointConfigName"]
        shadows = params.get("ShadowProductionVariants") or []
        if shadows and (len(params["ProductionVariants"]) != 1 or len(shadows) != 1):
            raise InvalidRequest(  # botocore's documentation of ShadowProductionVariants
                "With ShadowProductionVariants, specify one variant for ProductionVariants and one variant "
                "for ShadowProductionVariants."
            )
        variants = params["ProductionVariants"] + shadows
        names = [variant["VariantName"] for variant in variants]
        if len({n.lower() for n in names}) != len(names):
            raise InvalidRequest(
                f"VariantName must be unique within an endpoint configuration: {', '.join(names)}."
            )
        with_models = [variant for variant in variants if variant.get("ModelName") is not None]
        if with_models and len(with_models) != len(variants):
            raise InvalidRequest(
                "Either every production variant names a ModelName, or none does (an endpoint for "
                "inference components)."
            )
        for variant in with_models:
            self._existing(ModelResource, variant["ModelName"])
        try:
            asynchronous = params.get("AsyncInferenceConfig")
            if asynchronous is not None:
                AsyncConfig.from_api(asynchronous)
            CaptureConfig.from_request(params.get("DataCaptureConfig"))
        except ValidationError as exc:
            raise InvalidRequest(exc.message) from None
        config = self._new(ConfigResource, name, params)
        self.state.add(config)
        self._tagged(config, params)
        return {"EndpointConfigArn": config.arn}

    async def describe_endpoint_config(self, params: Params) -> Answer:
        config = self._existing(ConfigResource, params["EndpointConfigName"])
        return {
            **self._echo("DescribeEndpointConfig", "CreateEndpointConfig", config.request),
            "EndpointConfigName": config.name,
            "EndpointConfigArn": config.arn,
            "CreationTime": config.created,
        }

    async def list_endpoint_configs(self, params: Params) -> Answer:
        page, token = self._page(self.state.all(ConfigResource), params)
        configs = [
            {"EndpointConfigName": c.name, "EndpointConfigArn": c.arn, "CreationTime": c.created}
            for c in page
        ]
        return {"EndpointConfigs": configs, **token}

    async def delete_endpoint_config(self, params: Params) -> Answer:
        # endpoints created or updated from it keep what they were deployed with, as on SageMaker
        self.state.remove(self._existing(ConfigResource, params["EndpointConfigName"]))
        return {}

    # endpoints
    def _deployed(self, config_name: str) -> Deployed:
        """What an endpoint is deployed from: its configuration and each variant's model, as they are now."""
        config = self._existing(ConfigResource, config_name)
        models: dict[str, dict[str, Any] | None] = {}
        for variant in config.variants + config.shadows:
            if variant.get("ModelName") is None:  # an endpoint for inference components
                models[variant["VariantName"]] = None
                continue
            model = self.state.get(ModelResource, variant["ModelName"])
            if model is None:
                raise InvalidRequest(
                    f'Could not find model "{self.arn(Kind.MODEL, variant["ModelName"])}" '
                    f"(variant {variant['VariantName']} of {config.name})."
                )
            models[variant["VariantName"]] = {**model.request, "ModelName": model.name}
        return Deployed(config.name, config.request, models, asked=time.time())

    async def create_endpoint(self, params: Params) -> Answer:
        endpoint = self._new(EndpointResource, params["EndpointName"], params)
        endpoint.deployed = self._deployed(params["EndpointConfigName"])
        Shift.from_config(params.get("DeploymentConfig"), endpoint.deployed.instances)
        endpoint.last_deployment = params.get("DeploymentConfig")
        self.endpoints.create(endpoint)
        self._tagged(endpoint, params)
        return {"EndpointArn": endpoint.arn}

    async def describe_endpoint(self, params: Params) -> Answer:
        found = await self.endpoints.settled(self._existing(EndpointResource, params["EndpointName"]))
        if found is None:  # deleted meanwhile
            found = self._existing(EndpointResource, params["EndpointName"])
        assert isinstance(found, EndpointResource)
        return self._endpoint_answer(found)

    def _endpoint_answer(self, endpoint: EndpointResource) -> dict[str, Any]:
        """DescribeEndpointOutput: every member the endpoint's configuration and state determine."""
        deployed = endpoint.deployed
        answer: dict[str, Any] = {
            "EndpointName": endpoint.name,
            "EndpointArn": endpoint.arn,
            "EndpointStatus": endpoint.status.value,
            "CreationTime": endpoint.created,
            "LastModifiedTime": endpoint.modified,
        }
        if deployed is None:
            return answer
        if not endpoint.document:
            answer["EndpointConfigName"] = deployed.config
        # AsyncInferenceConfig, ExplainerConfig, ...: what the configuration set, in the same shape
        answer.update(self._echo("DescribeEndpoint", "CreateEndpointConfig", deployed.request))
        if endpoint.status not in (Status.CREATING, Status.FAILED):
            weights = {r.variant: r.weight for r in self.endpoints.running.get(endpoint.name.lower(), [])}
            answer["ProductionVariants"] = [
                self._variant_summary(v, endpoint.created, weights.get(v.name, v.weight))
                for v in deployed.variants
            ]
            if deployed.shadows:
                answer["ShadowProductionVariants"] = [
                    self._variant_summary(v, endpoint.created, v.weight) for v in deployed.shadows
                ]
        capture = deployed.request.get("DataCaptureConfig")
        if capture is not None:
            enabled = capture.get("EnableCapture", True)
            answer["DataCaptureConfig"] = {
                "EnableCapture": enabled,
                "CaptureStatus": "Started" if enabled else "Stopped",
                "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
                "DestinationS3Uri": capture["DestinationS3Uri"],
                **({"KmsKeyId": capture["KmsKeyId"]} if "KmsKeyId" in capture else {}),
            }
        if endpoint.last_deployment is not None:
            answer["LastDeploymentConfig"] = endpoint.last_deployment
        pending = endpoint.pending
        if pending is not None and endpoint.status is Status.UPDATING:
            answer["PendingDeploymentSummary"] = {
                "EndpointConfigName": pending.config,
                "ProductionVariants": [
                    {
                        key: value
                        for key, value in self._variant_summary(v, pending.asked, None).items()
                        if key not in ("CurrentWeight", "CurrentInstanceCount", "CurrentServerlessConfig")
                    }
                    | ({"InstanceType": v.request["InstanceType"]} if "InstanceType" in v.request else {})
                    for v in pending.variants
                ],
                "StartTime": pending.asked,
            }
        if endpoint.failure:
            answer["FailureReason"] = endpoint.failure
        return answer

    @staticmethod
    def _variant_summary(variant: PlannedVariant, resolved: float, current: float | None) -> dict[str, Any]:
        """ProductionVariantSummary: its images, weights, and its instance count (one local replica,
        whatever InitialInstanceCount asks: README) or, for a serverless variant, its ServerlessConfig."""
        images = (
            [c.get("Image", "") for c in containers_of(variant.model)] if variant.model is not None else []
        )
        summary: dict[str, Any] = {
            "VariantName": variant.name,
            "DeployedImages": [
                {"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": resolved}
                for image in images
            ],
            "CurrentWeight": current if current is not None else variant.weight,
            "DesiredWeight": variant.weight,
        }
        serverless = variant.serverless
        if serverless is not None:
            summary["CurrentServerlessConfig"] = summary["DesiredServerlessConfig"] = serverless
        else:
            summary["CurrentInstanceCount"] = summary["DesiredInstanceCount"] = 1
        return summary

    async def list_endpoints(self, params: Params) -> Answer:
        endpoints = self.state.all(EndpointResource)
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
                "EndpointStatus": e.status.value,
            }
            for e in page
        ]
        return {"Endpoints": summaries, **token}

    def _in_service(self, endpoint: EndpointResource) -> None:
        if endpoint.status is not Status.IN_SERVICE:
            raise InvalidRequest(
                f'Cannot update in-progress endpoint "{endpoint.arn}".'
                if endpoint.status.changing
                else f'Cannot update endpoint "{endpoint.arn}": it is {endpoint.status}.'
            )

    async def update_endpoint(self, params: Params) -> Answer:
        endpoint = self._changeable(params["EndpointName"])
        self._in_service(endpoint)
        assert endpoint.deployed is not None
        to = self._deployed(params["EndpointConfigName"])
        excluded = {p["VariantPropertyType"] for p in params.get("ExcludeRetainedVariantProperties", [])}
        if params.get("RetainAllVariantProperties") and "DesiredWeight" not in excluded:
            kept = {v.name: v.weight for v in endpoint.deployed.variants}
            to = to.weighted({v.name: kept[v.name] for v in to.variants if v.name in kept})
        if not params.get("RetainDeploymentConfig"):
            Shift.from_config(params.get("DeploymentConfig"), to.instances)  # what it refuses, refused now
            endpoint.last_deployment = params.get("DeploymentConfig")
        self.endpoints.update(endpoint, to)
        return {"EndpointArn": endpoint.arn}

    async def update_endpoint_weights_and_capacities(self, params: Params) -> Answer:
        endpoint = self._changeable(params["EndpointName"])
        self._in_service(endpoint)
        assert endpoint.deployed is not None
        names = {v.name for v in endpoint.deployed.variants}
        weights = {}
        for desired in params["DesiredWeightsAndCapacities"]:
            if desired["VariantName"] not in names:
                raise InvalidRequest(
                    f"Endpoint {endpoint.name} has no production variant {desired['VariantName']} (it has: "
                    f"{', '.join(sorted(names))})."
                )
            if "DesiredWeight" in desired:
                weights[desired["VariantName"]] = float(desired["DesiredWeight"])
        self.endpoints.reweigh(endpoint, weights)
        return {"EndpointArn": endpoint.arn}

    async def delete_endpoint(self, params: Params) -> Answer:
        endpoint = self._changeable(params["EndpointName"])
        if endpoint.status is Status.DELETING:
            return {}  # already on its way: one deletion, however often it is asked for
        if endpoint.status is Status.CREATING:
            raise InvalidRequest(
                f'Cannot delete endpoint "{endpoint.arn}" while it is Creating: delete it once it is '
                "InService or Failed."
            )
        components = self._components_of(endpoint.name)
        if components:
            raise InvalidRequest(
                f"Endpoint {endpoint.name} has inference components "
                f"({', '.join(c.name for c in components)}): delete them first."
            )
        self.endpoints.delete(endpoint)
        return {}

    # inference components
    def _components_of(self, endpoint: str) -> list[ComponentResource]:
        return [c for c in self.state.all(ComponentResource) if c.endpoint.lower() == endpoint.lower()]

    def _component_spec(self, endpoint: EndpointResource, params: Params) -> ComponentSpec:
        """What a component runs: its specification, its model's containers as they are now (for a
        ModelName) or its Container, on which variant."""
        spec = params.get("Specification")
        if spec is None or (spec.get("ModelName") is None) == (spec.get("Container") is None):
            raise InvalidRequest("Specification names either a ModelName or a Container (one of the two).")
        deployed = endpoint.deployed
        variants = [v.name for v in deployed.variants] if deployed is not None else []
        if deployed is not None and not deployed.for_components:
            raise InvalidRequest(
                f"Endpoint {endpoint.name} serves models; inference components go on an endpoint whose "
                "production variants name no ModelName."
            )
        variant = params.get("VariantName") or (variants[0] if variants else None)
        if variant is None or variant not in variants:
            raise InvalidRequest(
                f"Endpoint {endpoint.name} has no production variant {variant} "
                f"(it has: {', '.join(variants)})."
            )
        model = None
        if spec.get("ModelName") is not None:
            found = self._existing(ModelResource, spec["ModelName"])
            model = {**found.request, "ModelName": found.name}
        return ComponentSpec(spec, model, variant)

    async def create_inference_component(self, params: Params) -> Answer:
        endpoint = self._existing(EndpointResource, params["EndpointName"])
        if endpoint.status not in (Status.IN_SERVICE, Status.CREATING, Status.UPDATING):
            raise InvalidRequest(
                f'Cannot add an inference component to endpoint "{endpoint.arn}": it is {endpoint.status}.'
            )
        spec = self._component_spec(endpoint, params)
        component = self._new(ComponentResource, params["InferenceComponentName"], params)
        component.endpoint = endpoint.name
        component.deployed = spec
        self.endpoints.create(component)
        self._tagged(component, params)
        return {"InferenceComponentArn": component.arn}

    async def describe_inference_component(self, params: Params) -> Answer:
        found = await self.endpoints.settled(
            self._existing(ComponentResource, params["InferenceComponentName"])
        )
        if found is None:
            found = self._existing(ComponentResource, params["InferenceComponentName"])
        assert isinstance(found, ComponentResource) and found.deployed is not None
        spec = dict(found.deployed.specification)
        container = spec.pop("Container", None)
        if container is not None:
            image = container.get("Image", "")
            spec["Container"] = {
                **{k: v for k, v in container.items() if k != "Image"},
                "DeployedImage": {
                    "SpecifiedImage": image,
                    "ResolvedImage": image,
                    "ResolutionTime": found.created,
                },
            }
        answer: dict[str, Any] = {
            **self._component_summary(found),
            "Specification": spec,
            # one local copy, whatever CopyCount asks (README)
            "RuntimeConfig": {
                "DesiredCopyCount": 1,
                "CurrentCopyCount": 1 if found.status is Status.IN_SERVICE else 0,
            },
        }
        if found.last_deployment is not None:
            answer["LastDeploymentConfig"] = found.last_deployment
        if found.failure:
            answer["FailureReason"] = found.failure
        return answer

    def _component_summary(self, component: ComponentResource) -> dict[str, Any]:
        return {
            "InferenceComponentName": component.name,
            "InferenceComponentArn": component.arn,
            "EndpointName": component.endpoint,
            "EndpointArn": self.arn(Kind.ENDPOINT, component.endpoint),
            "VariantName": component.deployed.variant if component.deployed is not None else VARIANT_NAME,
            "InferenceComponentStatus": component.status.value,
            "CreationTime": component.created,
            "LastModifiedTime": component.modified,
        }

    async def list_inference_components(self, params: Params) -> Answer:
        components = self.state.all(ComponentResource)
        status, endpoint, variant = (
            params.get("StatusEquals"),
            params.get("EndpointNameEquals"),
            params.get("VariantNameEquals"),
        )
        if status is not None:
            components = [c for c in components if c.status == status]
        if endpoint is not None:
            components = [c for c in components if c.endpoint.lower() == endpoint.lower()]
        if variant is not None:
            components = [c for c in components if c.deployed is not None and c.deployed.variant == variant]
        page, token = self._page(components, params)
        return {"InferenceComponents": [self._component_summary(c) for c in page], **token}

    async def update_inference_component(self, params: Params) -> Answer:
        component = self._existing(ComponentResource, params["InferenceComponentName"])
        if component.status is not Status.IN_SERVICE:
            raise InvalidRequest(
                f'Cannot update inference component "{component.arn}": it is {component.status}.'
            )
        if params.get("Specification") is None:  # only the copy count changes: one local copy either way
            return {"InferenceComponentArn": component.arn}
        endpoint = self._existing(EndpointResource, component.endpoint)
        spec = self._component_spec(endpoint, {**component.request, **params})
        component.last_deployment = params.get("DeploymentConfig")
        self.endpoints.update(component, spec)
        return {"InferenceComponentArn": component.arn}

    async def delete_inference_component(self, params: Params) -> Answer:
        component = self._existing(ComponentResource, params["InferenceComponentName"])
        if component.status is not Status.DELETING:  # one deletion, however often it is asked for
            self.endpoints.delete(component)
        return {}

    # tags, on every kind above
    def _by_arn(self, arn: str) -> Resource:
        resource = self.state.by_arn(arn.lower())
        if resource is None:
            raise InvalidRequest(f'Could not find resource "{arn}" in this region and account.')
        return resource

    async def add_tags(self, params: Params) -> Answer:
        resource = self._by_arn(params["ResourceArn"])
        keys = {tag["Key"] for tag in self.state.tags(resource.arn)} | {tag["Key"] for tag in params["Tags"]}
        if len(keys) > MAX_TAGS:
            raise InvalidRequest(
                f"{resource.kind.what.capitalize()} {resource.name} would have {len(keys)} tags; a resource "
                f"has at most {MAX_TAGS}."
            )
        self.state.tag(resource.arn, params["Tags"])
        return {"Tags": params["Tags"]}

    async def list_tags(self, params: Params) -> Answer:
        resource = self._by_arn(params["ResourceArn"])
        page, token = _cut(self.state.tags(resource.arn), params, TAGS_PAGE, MAX_PAGE)
        return {"Tags": page, **token}

    async def delete_tags(self, params: Params) -> Answer:
        resource = self._by_arn(params["ResourceArn"])
        self.state.untag(resource.arn, params["TagKeys"])
        return {}

    # answers
    def _echo(self, describe: str, create: str, request: Params) -> Answer:
        """The members of `describe`'s output shape that `create`'s request set, in the same shape: what
        Describe gives back as configured. A member of the same name in another shape (DescribeEndpoint's
        DataCaptureConfig is a summary) is the Describe's own to compute."""
        given = self._service.operation_model(create).input_shape.members
        answered = self._service.operation_model(describe).output_shape.members
        return {
            key: value
            for key, value in request.items()
            if key in answered and key in given and answered[key].name == given[key].name
        }

    # lists
    def _page(self, resources: list[R], params: Params) -> tuple[list[R], dict[str, str]]:
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
            "Status": lambda r: r.status.value if isinstance(r, Hosted) else "",
        }.get(order, lambda r: r.created)
        resources = sorted(
            resources, key=sort_key, reverse=params.get("SortOrder", "Descending") == "Descending"
        )
        return _cut(resources, params, DEFAULT_PAGE, MAX_PAGE)


T = TypeVar("T")


def _cut(items: list[T], params: Params, default: int, most: int) -> tuple[list[T], dict[str, str]]:
    """One page of `items` by MaxResults (`default` when absent) and an opaque NextToken."""
    size = params.get("MaxResults", default)
    if not 1 <= size <= most:
        raise InvalidRequest(f"MaxResults must be between 1 and {most}; it is {size}.")
    start = 0
    token = params.get("NextToken")
    if token is not None:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode())
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("NextToken is not one this service issued.") from None
    page = items[start : start + size]
    if start + size >= len(items):
        return page, {}
    return page, {"NextToken": base64.urlsafe_b64encode(str(start + size).encode()).decode()}
