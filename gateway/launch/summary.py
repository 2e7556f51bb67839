"""What `mce up` prints once the endpoint is up: where it is, where its logs are, and how to call it."""

from __future__ import annotations

import shlex
from pathlib import Path

from gateway.endpoint import Endpoint, ExecutionMode


def summary(endpoint: Endpoint, url: str, elapsed: float, run_dir: Path) -> str:
    names = [endpoint.hostname(i) for i in range(len(endpoint.containers))]
    direct = endpoint.mode is ExecutionMode.DIRECT
    example = endpoint.containers[0].Backend.Example
    content_type = example.ContentType if example is not None else "application/json"
    body = example.Body if example is not None else "{}"
    target = f'TargetContainerHostname="{names[0]}", ' if direct else ""
    header = f"-H 'X-Amzn-SageMaker-Target-Container-Hostname: {names[0]}' " if direct else ""
    if example is not None and example.TargetModel is not None:
        target += f'TargetModel="{example.TargetModel}", '
        header += f"-H 'X-Amzn-SageMaker-Target-Model: {example.TargetModel}' "
    invoke_url = f"{url}/endpoints/{endpoint.EndpointName}/invocations"
    lines = [
        "",
        (f"Endpoint {endpoint.EndpointName} is up at {url} ({endpoint.layout()}), ready in {elapsed:.1f} s."),
        f"Logs: {run_dir}/<container>.log. Ctrl-C stops everything.",
        "",
        "boto3:",
        "    import boto3",
        f'    runtime = boto3.client("sagemaker-runtime", endpoint_url="{url}", region_name="us-east-1",',
        '                           aws_access_key_id="local", aws_secret_access_key="local")',
        (
            f'    answer = runtime.invoke_endpoint(EndpointName="{endpoint.EndpointName}", {target}'
            f'ContentType="{content_type}",'
        ),
        f"                                     Body={body!r})",
        '    print(answer["Body"].read().decode())',
        "",
        "curl:",
        f"    curl -s {header}-H 'Content-Type: {content_type}' --data-binary {shlex.quote(body)} "
        f"{invoke_url}",
        "",
    ]
    if direct and len(names) > 1:
        lines.insert(-1, f"    (other containers: {', '.join(names[1:])})")
    if example is None:
        lines.insert(-1, "    (replace the body with what your model takes; Backend.Example sets it)")
    return "\n".join(lines)
