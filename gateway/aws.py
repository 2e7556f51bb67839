"""Clients of AWS services the gateway itself calls (S3: model data, asynchronous inference), made with
botocore's usual chain: credentials, region, and `AWS_ENDPOINT_URL_S3` for a local S3 server."""

from __future__ import annotations

from typing import Any


def s3_client() -> Any:
    import botocore.session  # imported when first needed: most endpoints never call S3

    session = botocore.session.get_session()
    return session.create_client("s3", region_name=session.get_config_variable("region") or "us-east-1")
