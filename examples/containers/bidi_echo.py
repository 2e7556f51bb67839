"""A container for InvokeEndpointWithBidirectionalStream: a WebSocket at /invocations-bidirectional-stream
(any path: SageMaker sends ModelInvocationPath there instead), and GET /ping, on SAGEMAKER_BIND_TO_PORT
(default 8080). It needs the `websockets` package (a dependency of mce-gateway).

Each text message comes back as `echo: <text>`, each binary message reversed, as it arrives. A few text
messages steer it: `path` answers the path and query the WebSocket was opened at; `many N` answers N
messages of 1 KiB; `close` closes the WebSocket (1000); `fail` closes it with 1011, as a model that broke.
When the other side closes, it closes too.
"""

from __future__ import annotations

import asyncio
import os
import signal
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


def ping(connection: ServerConnection, request: Request) -> Response | None:
    """GET /ping is SageMaker's health check; every other request opens a WebSocket."""
    if request.path == "/ping":
        return connection.respond(HTTPStatus.OK, "")
    return None


async def echo(socket: ServerConnection) -> None:
    async for message in socket:
        if isinstance(message, bytes):
            await socket.send(message[::-1])
        elif message == "path":
            await socket.send(socket.request.path if socket.request is not None else "")
        elif message.startswith("many "):
            for i in range(int(message.split()[1])):
                await socket.send(f"{i:06d} " + "x" * 1017)
        elif message == "close":
            await socket.close(1000, "asked to")
            return
        elif message == "fail":
            await socket.close(1011, "the model broke")
            return
        else:
            await socket.send(f"echo: {message}")


async def main() -> None:
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    host = os.environ.get("MCE_BIND_ADDRESS", "0.0.0.0")
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server: Any
    async with serve(echo, host, port, process_request=ping, compression=None) as server:
        print(f"bidi-echo listening on {server.sockets[0].getsockname()[1]}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
