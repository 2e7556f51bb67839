"""An endpoint as a SageMaker control plane describes it, for `mce render kubernetes --from URL`.

DescribeEndpoint, then DescribeEndpointConfig and DescribeModel for each production variant, asked of
any SageMaker API: `mce up`'s (the local SageMaker) or AWS's own. Each variant becomes the endpoint
document the local SageMaker would deploy (gateway.control.endpoints.model_document), but for the image
itself: a container's Backend comes from the image map unless the entry only stands in for the image
(`Emulated`), and an image the map does not know is reached by the SageMaker contract, as SageMaker
reaches it.
"""

from __future__ import annotations

from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from gateway.control.endpoints import model_document
from gateway.control.images import ImageMap
from gateway.endpoint import parse_endpoint
from gateway.errors import DocumentError
from gateway.kubernetes import Variant

CONTRACT = {"Protocol": "sagemaker"}  # GET /ping, POST /invocations on SAGEMAKER_BIND_TO_PORT
TIMEOUT = 30.0  # seconds for each API call


class DescribeError(Exception):
    """The endpoint cannot be read from the API; the message says which call failed and why."""


def deployed_variants(
    url: str | None, endpoint: str, images: ImageMap, region: str = "us-east-1"
) -> list[Variant]:
    """Each production variant of `endpoint` that has a model (variants for inference components have
    none), with its endpoint document. `url` None: the API botocore finds (AWS_ENDPOINT_URL_SAGEMAKER,
    or AWS itself)."""
    client = _client(url, region)
    config_name = _call(client, "describe_endpoint", EndpointName=endpoint)["EndpointConfigName"]
    config = _call(client, "describe_endpoint_config", EndpointConfigName=config_name)
    variants = []
    for variant in config["ProductionVariants"]:
        if "ModelName" not in variant:
            continue
        model = _call(client, "describe_model", ModelName=variant["ModelName"])
        document = model_document(endpoint, model, lambda container: _backend(container, images))
        try:
            parsed = parse_endpoint(
                document, source=f"variant {variant['VariantName']}", default_name=endpoint
            )
        except DocumentError as exc:
            raise DescribeError(f"variant {variant['VariantName']}: {exc}") from None
        variants.append(
            Variant(
                variant["VariantName"],
                float(variant.get("InitialVariantWeight", 1.0)),
                parsed,
                int(variant.get("InitialInstanceCount", 1)),
            )
        )
    return variants


def _backend(container: dict[str, Any], images: ImageMap) -> dict[str, Any]:
    found = images.backend(container.get("Image", ""), the_image_runs=True)
    if found is None:
        return dict(CONTRACT)
    return {key: value for key, value in found.items() if key != "Launch"}  # the image runs, not a command


def _client(url: str | None, region: str) -> Any:
    session = botocore.session.get_session()
    config = Config(retries={"max_attempts": 2}, read_timeout=TIMEOUT, connect_timeout=5)
    if session.get_credentials() is None:  # the local SageMaker checks none unless --access is on
        session.set_credentials("local", "local")
    return session.create_client("sagemaker", region_name=region, endpoint_url=url, config=config)


def _call(client: Any, operation: str, **parameters: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = getattr(client, operation)(**parameters)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DescribeError(f"{operation}: {error.get('Code')}: {error.get('Message')}") from None
    except NoCredentialsError:
        raise DescribeError(f"{operation}: no AWS credentials found") from None
    except BotoCoreError as exc:
        raise DescribeError(f"{operation}: {exc}") from None
    return answer
