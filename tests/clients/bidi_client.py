"""InvokeEndpointWithBidirectionalStream with the official client, `aws-sdk-sagemaker-runtime-http2`
(Python 3.12 or later: run by tests/test_bidirectional.py with the interpreter `.ci/setup` prepares).

It is configured as a user would: AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2, SSL_CERT_FILE (mce's
certificate), the usual credential variables. Its standard input is a JSON plan:

    {"endpoint": NAME, "variant": ..., "path": ..., "query": ...,     the request's members
     "parts": [[TEXT_OR_BASE64, "UTF8" | "BINARY"], ...],               what it sends, in order
     "lockstep": true,                                                   wait for one answer per part
     "then": TEXT}                                                       a last UTF8 part, not waited for

It prints one JSON object: the output's variant and request id, each event received (its bytes in base64,
its DataType), and the error the client raised, if one did (its type, message and members).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

from aws_sdk_sagemaker_runtime_http2.client import AsyncSageMakerRuntimeHTTP2Client
from aws_sdk_sagemaker_runtime_http2.config import AsyncSageMakerRuntimeHTTP2Config
from aws_sdk_sagemaker_runtime_http2.models import (
    InvokeEndpointWithBidirectionalStreamInput,
    RequestPayloadPart,
    RequestStreamEventPayloadPart,
    ResponseStreamEventPayloadPart,
)
from smithy_http.aio.crt import AWSCRTHTTPClient


def described(error: BaseException) -> dict[str, Any]:
    members = {
        key: value
        for key, value in vars(error).items()
        if isinstance(value, (str, int)) and not key.startswith("_")
    }
    return {"type": type(error).__name__, "message": str(error), "members": members}


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    config = await AsyncSageMakerRuntimeHTTP2Config.resolve(transport=AWSCRTHTTPClient())
    client = AsyncSageMakerRuntimeHTTP2Client(config=config)
    result: dict[str, Any] = {"events": []}
    try:
        stream = await client.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(
                endpoint_name=plan["endpoint"],
                target_variant=plan.get("variant"),
                model_invocation_path=plan.get("path"),
                model_query_string=plan.get("query"),
            )
        )
        answers: asyncio.Queue[None] = asyncio.Queue()

        async def read() -> None:
            output, events = await stream.await_output()
            result["variant"] = output.invoked_production_variant
            async for event in events:
                if isinstance(event, ResponseStreamEventPayloadPart):
                    part = event.value
                    result["events"].append(
                        {"bytes": base64.b64encode(part.bytes_ or b"").decode(), "type": part.data_type}
                    )
                    answers.put_nowait(None)

        reader = asyncio.create_task(read())
        for data, data_type in plan["parts"]:
            raw = data.encode() if data_type == "UTF8" else base64.b64decode(data)
            await stream.input_stream.send(
                RequestStreamEventPayloadPart(RequestPayloadPart(bytes_=raw, data_type=data_type))
            )
            if plan.get("lockstep"):  # the answer to this part arrives before the next part is sent
                await asyncio.wait_for(answers.get(), 30)
        if plan.get("then"):  # one more part, sent without waiting for an answer
            await stream.input_stream.send(
                RequestStreamEventPayloadPart(
                    RequestPayloadPart(bytes_=plan["then"].encode(), data_type="UTF8")
                )
            )
        await stream.input_stream.close()
        await asyncio.wait_for(reader, 60)
    except Exception as error:  # what the client raised is the test's to judge
        result["error"] = described(error)
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))), flush=True)
