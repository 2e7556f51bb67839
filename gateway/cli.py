"""`mce`, the command line: validate an endpoint document, serve it. The only place exit codes are chosen."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway import __version__
from gateway.dataplane import DataPlane
from gateway.endpoint import Endpoint, check_servable, load_endpoint
from gateway.errors import EndpointDocumentError
from gateway.server import Server

logger = logging.getLogger("gateway")

EXIT_OK = 0
EXIT_INVALID = 1  # the endpoint document breaks a rule
EXIT_FAILED = 2  # the gateway could not start (e.g. the address is in use)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mce", description="SageMaker multi-container endpoints, anywhere: a gateway that speaks the runtime API."
    )
    parser.add_argument("--version", action="version", version=f"mce-gateway {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check an endpoint document; exit 1 with every problem found")
    validate.add_argument("file", help="endpoint document (YAML or JSON, shaped like a CreateModel request)")
    validate.set_defaults(command=_validate)

    serve = commands.add_parser("serve", help="serve an endpoint whose containers are already running")
    serve.add_argument("file", help="endpoint document (YAML or JSON)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on; 0 lets the OS choose (default 8080)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--shutdown-grace", type=float, default=30.0, metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long answers in progress may take to finish (default 30)",
    )
    serve.set_defaults(command=_serve)
    return parser


def _load(path: str) -> Endpoint | None:
    try:
        return load_endpoint(path)
    except EndpointDocumentError as exc:
        print(exc, file=sys.stderr)
        return None


def _validate(args: argparse.Namespace) -> int:
    endpoint = _load(args.file)
    if endpoint is None:
        return EXIT_INVALID
    names = ", ".join(endpoint.hostname(i) for i in range(len(endpoint.containers)))
    print(f"{args.file}: endpoint {endpoint.EndpointName} is valid ({endpoint.mode.value} mode: {names})")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    endpoint = _load(args.file)
    if endpoint is None:
        return EXIT_INVALID
    try:
        check_servable(endpoint, args.file)
    except EndpointDocumentError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return _run(_serve_endpoint(endpoint, args.host, args.port, args.shutdown_grace))


async def _serve_endpoint(endpoint: Endpoint, host: str, port: int, grace: float) -> int:
    dataplane = DataPlane.from_endpoint(endpoint)
    await dataplane.start()
    server = Server(dataplane, host=host, port=port)
    try:
        bound_host, bound_port = await server.start()
    except OSError as exc:
        print(f"mce: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        await dataplane.close()
        return EXIT_FAILED
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    names = ", ".join(backend.name for backend in dataplane.backends)
    print(
        f"mce-gateway: endpoint {endpoint.EndpointName} ({endpoint.mode.value}: {names}) "
        f"listening on http://{bound_host}:{bound_port}",
        flush=True,
    )
    await stop.wait()
    logger.info("stopping: finishing answers in progress (up to %.0f s)", grace)
    await server.shutdown(grace)
    await dataplane.close()
    return EXIT_OK


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it exists (it is the faster loop on Linux), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)
