"""`mce`, the command line: validate, serve, up, render. The only place exit codes are chosen."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__, bidi, check, tls
from gateway.app import Gateway, LocalSageMaker, Options
from gateway.async_inference import AsyncConfig
from gateway.compose import RenderError, render
from gateway.control.endpoints import DESCRIBE_HOLD
from gateway.control.images import ImageMap, ImageMapError
from gateway.control.state import State, StateError
from gateway.endpoint import ContainerMode, Endpoint, check_servable, load_endpoint
from gateway.errors import DocumentError
from gateway.launch import docker
from gateway.launch.console import Console
from gateway.launch.deployment import PROCESSES, Deployment
from gateway.launch.layout import at_hostnames
from gateway.launch.modeldata import missing_model_data
from gateway.launch.plan import LaunchError
from gateway.launch.ports import port_free
from gateway.launch.process import Registry
from gateway.launch.summary import summary
from gateway.launch.supervisor import STARTUP_TIMEOUT, STOP_GRACE
from gateway.limits import MIB, Limits, raise_descriptor_limit
from gateway.origins import host_name, is_loopback
from gateway.serverless import IDLE_SECONDS
from gateway.wire import LOCAL_ACCOUNT, VARIANT_NAME
from gateway.workers import Siblings, supervise, worker_index

if TYPE_CHECKING:
    from gateway.access import Access

logger = logging.getLogger("gateway")

EXIT_OK = 0
EXIT_INVALID = 1  # the endpoint document breaks a rule, or a container could not start
EXIT_FAILED = 2  # the gateway could not start (e.g. the address is in use)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what a worker of mce serve is run with
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mce",
        description="SageMaker multi-container endpoints, anywhere: a gateway that speaks the runtime API.",
    )
    parser.add_argument("--version", action="version", version=f"mce-gateway {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check an endpoint document; exit 1 with every problem found"
    )
    validate.add_argument("file", help="endpoint document (YAML or JSON, shaped like a CreateModel request)")
    validate.set_defaults(command=_validate)

    serve = commands.add_parser("serve", help="serve an endpoint whose containers are already running")
    _listen_options(serve)
    serve.add_argument(
        "--by-hostname",
        action="store_true",
        help=(
            "reach containers without a Backend.Url at their ContainerHostname on the standard ports "
            "(compose)"
        ),
    )
    serve.add_argument(
        "--variant",
        default=VARIANT_NAME,
        type=_variant_name,
        metavar="NAME",
        help=(
            f"the production variant this gateway is (default {VARIANT_NAME}): its name in answers, metrics "
            "and log names, and what X-Amzn-SageMaker-Target-Variant may ask for (Kubernetes renders one per "
            "variant)"
        ),
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help=(
            f"serve from N processes on the one port (SO_REUSEPORT, 1-{MAX_WORKERS}; default 1), one per "
            "core; GET /metrics adds up all of them (gateway/workers.py)"
        ),
    )
    serve.add_argument("--worker-dir", type=Path, help=argparse.SUPPRESS)  # set by the supervisor
    serve.add_argument("--worker-index", type=worker_index, help=argparse.SUPPRESS)
    serve.set_defaults(command=_serve)

    up = commands.add_parser(
        "up",
        help=(
            "a local SageMaker: its control-plane API and every endpoint on one port; with documents, "
            "their endpoints start in it (Ctrl-C stops all)"
        ),
    )
    _listen_options(up, documents="*")
    up.add_argument(
        "--state",
        type=Path,
        default=Path("run"),
        metavar="DIR",
        help="the local SageMaker's database, and each endpoint's logs and files (default run/)",
    )
    up.add_argument(
        "--images",
        type=Path,
        metavar="FILE",
        help="an image map: how to run the Image of each CreateModel container (README, 'A local SageMaker')",
    )
    up.add_argument(
        "--data-root",
        type=Path,
        action="append",
        default=[],
        dest="data_roots",
        metavar="DIR",
        help=(
            "a folder whose files a local ModelDataUrl of CreateModel (a path or file://) may name, besides "
            "the folder mce up runs in; repeatable"
        ),
    )
    up.add_argument(
        "--run-dir", type=Path, help="one document's logs and runtime files (default <state>/<EndpointName>)"
    )
    up.add_argument(
        "--startup-timeout",
        type=float,
        default=STARTUP_TIMEOUT,
        metavar="SECONDS",
        help=(
            f"how long containers may take to pass their health checks (default {STARTUP_TIMEOUT:.0f}, as "
            "SageMaker)"
        ),
    )
    up.add_argument(
        "--http2-port",
        type=int,
        default=None,
        metavar="PORT",
        help=(
            "also serve InvokeEndpointWithBidirectionalStream, SageMaker's HTTP/2 runtime service, on this "
            "port (HTTP/2 over TLS; 0: one the OS chooses; AWS uses 8443). Its certificate is made in "
            "<state>/tls/ unless --tls-cert and --tls-key give one; point the client at it with "
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2=https://localhost:PORT and SSL_CERT_FILE=<the cert>"
        ),
    )
    up.add_argument(
        "--tls-cert", type=Path, default=None, metavar="FILE", help="PEM certificate for --http2-port"
    )
    up.add_argument("--tls-key", type=Path, default=None, metavar="FILE", help="PEM key for --tls-cert")
    up.add_argument(
        "--serverless-idle",
        type=float,
        default=IDLE_SECONDS,
        metavar="SECONDS",
        help=(
            f"how long a serverless variant's containers run with no invocation before they stop; the next "
            f"invocation waits while they start again, a cold start (default {IDLE_SECONDS:.0f}; 0: they "
            "never stop; a variant with ProvisionedConcurrency never stops)"
        ),
    )
    up.add_argument(
        "--describe-hold",
        type=float,
        default=DESCRIBE_HOLD,
        metavar="SECONDS",
        help=(
            f"how long DescribeEndpoint (and DescribeInferenceComponent) may hold its answer while the "
            f"resource is Creating, Updating or Deleting, so a waiter sees the outcome at once (default "
            f"{DESCRIBE_HOLD:.0f}, below botocore's 60 s read timeout); 0 answers at once, as SageMaker does"
        ),
    )
    up.set_defaults(command=_up)

    check_command = commands.add_parser(
        "check",
        help="the SageMaker serving contract, rule by rule, against one container: mce check IMAGE (under "
        "Docker) or mce check -- COMMAND ARGS... (natively); exit 0 only when every rule holds",
    )
    check_command.add_argument("what", nargs="+", metavar="IMAGE | -- COMMAND", help="what to check")
    check_command.add_argument(
        "--body", type=Path, metavar="FILE", help="the sample request for /invocations (default {})"
    )
    check_command.add_argument(
        "--content-type",
        default="application/json",
        help="the sample's Content-Type (default application/json)",
    )
    check_command.add_argument("--accept", help="the sample's Accept")
    check_command.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="model data: /opt/ml/model for an image, MCE_MODEL_DIR for a command; for --multi-model, the "
        "model to load",
    )
    check_command.add_argument(
        "--multi-model",
        action="store_true",
        help="check the multi-model API too (an image says so by its label)",
    )
    check_command.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the container's Environment; repeatable",
    )
    for flag, default, what in (
        ("--startup-timeout", check.STARTUP_TIMEOUT, "for /ping to answer 200"),
        ("--invoke-timeout", check.INVOKE_TIMEOUT, "for /invocations to answer"),
        ("--stop-grace", check.STOP_GRACE, "for it to exit after SIGTERM"),
    ):
        check_command.add_argument(
            flag,
            type=float,
            default=default,
            metavar="SECONDS",
            help=f"{what} (default {default:g}, SageMaker's)",
        )
    check_command.add_argument("--json", action="store_true", help="the findings as JSON, for CI")
    check_command.set_defaults(command=_check)

    status_command = commands.add_parser("status", help="each container of a running endpoint at a glance")
    status_command.add_argument(
        "url", nargs="?", default="http://127.0.0.1:8080", help="the gateway (default http://127.0.0.1:8080)"
    )
    status_command.set_defaults(command=_status)

    render_command = commands.add_parser("render", help="write the endpoint in another tool's format")
    render_command.add_argument("format", choices=["compose", "kubernetes"])
    render_command.add_argument(
        "file", nargs="?", help="endpoint document (or, for kubernetes, --from and --endpoint)"
    )
    render_command.add_argument(
        "-o",
        "--output",
        type=Path,
        help="compose: write this file (default: standard output); kubernetes: write into this folder",
    )
    render_command.add_argument(
        "--port", type=int, default=8080, help="compose: the gateway's published port (default 8080)"
    )
    render_command.add_argument(
        "--registry", help="kubernetes: pull every image from this registry (e.g. registry.example.com/team)"
    )
    render_command.add_argument(
        "--endpoint",
        metavar="NAME",
        help=(
            "kubernetes: render this deployed endpoint, every production variant, as a SageMaker API "
            "describes it (--from; without it, AWS_ENDPOINT_URL_SAGEMAKER or AWS itself)"
        ),
    )
    render_command.add_argument(
        "--from",
        dest="source_url",
        metavar="URL",
        help="kubernetes, with --endpoint: the SageMaker API to ask (a local SageMaker: http://127.0.0.1:8080)",
    )
    render_command.add_argument(
        "--images", type=Path, metavar="FILE", help="kubernetes, with --endpoint: an image map (as mce up's)"
    )
    render_command.add_argument(
        "--route-parent",
        default="gateway",
        metavar="[NAMESPACE/]NAME",
        help="kubernetes, with several variants: the Gateway API Gateway the HTTPRoute attaches to",
    )
    render_command.add_argument(
        "--invocations-per-pod",
        type=float,
        help="kubernetes: autoscale on invocations a second per pod (Prometheus adapter) instead of CPU",
    )
    render_command.set_defaults(command=_render)

    fetch = commands.add_parser(
        "fetch-model", help="make a ModelDataUrl local, as SageMaker does (Kubernetes' init step)"
    )
    fetch.add_argument("url", help="s3://, https:// or a local .tar.gz")
    fetch.add_argument("folder", type=Path, help="extract it here (e.g. /opt/ml/model)")
    fetch.set_defaults(command=_fetch_model)
    return parser


def _listen_options(command: argparse.ArgumentParser, documents: str | None = None) -> None:
    if documents is None:
        command.add_argument("file", help="endpoint document (YAML or JSON)")
    else:
        command.add_argument(
            "files", nargs=documents, metavar="FILE", help="endpoint documents (YAML or JSON)"
        )
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    command.add_argument(
        "--allow-host",
        action="append",
        default=[],
        dest="allow_hosts",
        metavar="NAME",
        help=(
            "also answer requests whose Host is NAME (any port); repeatable; '*.example' names under "
            "example, '*' any Host (a private network that is itself the boundary). Loopback addresses, "
            "localhost and --host are always answered (gateway/origins.py)"
        ),
    )
    command.add_argument(
        "--trust-network",
        action="store_true",
        help=(
            "listen beyond loopback without --access: everyone who can reach the port may deploy and run "
            "containers as this user (a compose or cluster network that is itself the boundary)"
        ),
    )
    command.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        help="the region in ARNs (default $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1; with --access, its)",
    )
    command.add_argument(
        "--account",
        default=LOCAL_ACCOUNT,
        help=f"the account in ARNs (default {LOCAL_ACCOUNT}; with --access, its)",
    )
    command.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 lets the OS choose (default 8080)"
    )
    command.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    command.add_argument(
        "--no-metrics",
        action="store_true",
        help="no /metrics, no Server-Timing (they cost a little per request)",
    )
    command.add_argument("--access-log", action="store_true", help="one JSON line per invocation on stderr")
    command.add_argument(
        "--access",
        metavar="FILE",
        help=(
            "turn on SigV4 authentication and per-key IAM policies, from this access file (see "
            "gateway/access.py)"
        ),
    )
    command.add_argument(
        "--model-cache",
        type=Path,
        metavar="DIR",
        help="MultiModel containers' unpacked models, a folder per container; the container must see it at "
        "the same path (default: <run dir>/models, run/<EndpointName>/models for serve)",
    )
    command.add_argument(
        "--shutdown-grace",
        type=float,
        default=STOP_GRACE,
        metavar="SECONDS",
        help=f"on SIGTERM/SIGINT, how long answers in progress may take to finish (default {STOP_GRACE:.0f})",
    )
    limits = command.add_argument_group("client limits (gateway/limits.py; README, 'Limits and timeouts')")
    defaults = Limits()
    for flag, field, what in (
        ("--header-timeout", "header_timeout", "for a request's line and headers, from its first byte"),
        ("--body-timeout", "body_timeout", "for a request's body, from its last header"),
        ("--keep-alive-timeout", "keep_alive_timeout", "an idle kept-alive connection stays open"),
        ("--send-timeout", "send_timeout", "a client may take none of its answer before it is cut off"),
    ):
        limits.add_argument(
            flag,
            type=_positive,
            default=getattr(defaults, field),
            dest=field,
            metavar="SECONDS",
            help=f"seconds {what} (default {getattr(defaults, field):g})",
        )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        metavar="N",
        help="open client connections; past it new ones are answered 503 "
        f"(default {defaults.max_connections}, lowered to what `ulimit -n` holds)",
    )
    limits.add_argument(
        "--max-buffered-mib",
        type=_positive,
        default=defaults.max_buffered_bodies / MIB,
        metavar="MIB",
        help="request bodies held by all connections together; past it requests are answered 503 "
        f"(default {defaults.max_buffered_bodies // MIB})",
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _limits(args: argparse.Namespace) -> Limits:
    raise_descriptor_limit()
    return Limits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        send_timeout=args.send_timeout,
        max_connections=args.max_connections,
        max_buffered_bodies=int(args.max_buffered_mib * MIB),
    ).fitted()


def _load(path: str) -> Endpoint | None:
    try:
        return load_endpoint(path)
    except DocumentError as exc:
        print(exc, file=sys.stderr)
        return None


def _access(args: argparse.Namespace) -> Access | None:
    """The access file's keys and policies (None: authentication off); exits 1 if it is unusable."""
    if args.access is None:
        return None
    from gateway.access import load_access  # botocore, only when authentication is on

    try:
        return load_access(args.access)
    except DocumentError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(EXIT_INVALID) from None


def _validate(args: argparse.Namespace) -> int:
    endpoint = _load(args.file)
    if endpoint is None:
        return EXIT_INVALID
    issues = missing_model_data(endpoint, Path(args.file).resolve().parent)
    if issues:
        print(DocumentError(args.file, issues), file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.file}: endpoint {endpoint.EndpointName} is valid ({endpoint.layout()})")
    return EXIT_OK


def _render_deployed(args: argparse.Namespace) -> int:
    """`mce render kubernetes --endpoint NAME [--from URL] -o DIR`: every production variant."""
    from gateway import kubernetes
    from gateway.control.described import DescribeError, deployed_variants

    if args.file is not None or args.output is None:
        print("mce: render kubernetes --endpoint NAME takes no document, and -o DIR", file=sys.stderr)
        return EXIT_INVALID
    try:
        variants = deployed_variants(args.source_url, args.endpoint, ImageMap.load(args.images))
        source = f"--endpoint {args.endpoint}" + (f" --from {args.source_url}" if args.source_url else "")
        files = kubernetes.render_variants(
            args.endpoint,
            variants,
            registry=args.registry,
            source=source,
            invocations_per_pod=args.invocations_per_pod,
            parent=args.route_parent,
        )
    except (DescribeError, ImageMapError, RenderError) as exc:
        print(f"mce: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for name, text in files.items():
        path = args.output / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return EXIT_OK


def _variant_name(text: str) -> str:
    """A VariantName as SageMaker's API has it: up to 63 letters, digits and inner hyphens."""
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a variant name (letters, digits and hyphens, 63 at most, no hyphen first)"
        )
    return text


def _serve(args: argparse.Namespace) -> int:
    endpoint = _load(args.file)
    if endpoint is None:
        return EXIT_INVALID
    if args.by_hostname:
        endpoint = at_hostnames(endpoint)
    try:
        check_servable(endpoint, args.file)
    except DocumentError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    access = _access(args)
    if not _may_listen(args, access):
        return EXIT_FAILED
    if args.workers > 1:
        if any(container.Mode is ContainerMode.MULTI_MODEL for container in endpoint.containers):
            print(
                "mce: --workers is for endpoints without MultiModel containers: each worker would load and "
                "unload models in the same container on its own",
                file=sys.stderr,
            )
            return EXIT_INVALID
        if args.port != 0 and not port_free(args.host, args.port):  # SO_REUSEPORT would share it silently
            print(
                f"mce: port {args.port} on {args.host} is in use; stop what holds it or pass --port",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return EXIT_OK if supervise(args.argv, args.workers, args.port) == 0 else EXIT_FAILED
    _logging(args.log_level)
    return _run(_serve_endpoint(endpoint, args, access))


def _up(args: argparse.Namespace) -> int:
    documents = []
    for file in args.files:
        endpoint = _load(file)
        if endpoint is None:
            return EXIT_INVALID
        documents.append((endpoint, Path(file)))
    names = [endpoint.EndpointName for endpoint, _ in documents]
    if len(set(names)) != len(names):
        print(f"mce: two documents name the same endpoint: {', '.join(names)}", file=sys.stderr)
        return EXIT_INVALID
    if args.run_dir is not None and len(documents) > 1:
        print("mce: --run-dir is for one document; with several, each goes under --state", file=sys.stderr)
        return EXIT_INVALID
    try:
        images = ImageMap.load(args.images)
    except ImageMapError as exc:
        print(f"mce: {exc}", file=sys.stderr)
        return EXIT_INVALID
    access = _access(args)
    if not _may_listen(args, access):
        return EXIT_FAILED
    # mce up forks container processes while gRPC channels are open: gRPC's fork handlers only log noise
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    _logging(args.log_level)
    return _run(_up_local(documents, images, args, access))


def _may_listen(args: argparse.Namespace, access: Access | None) -> bool:
    """Listening beyond loopback without --access hands the port to everyone who can reach it: only when
    told so (--trust-network); says why otherwise."""
    if access is not None or args.trust_network or is_loopback(host_name(args.host)):
        return True
    print(
        f"mce: --host {args.host} listens beyond this machine, and without --access everyone who can reach "
        "the port may create models and endpoints, which runs their containers as this user. Give --access "
        "FILE (SigV4 keys and policies), or --trust-network when the network is the boundary (compose, a "
        "cluster).",
        file=sys.stderr,
    )
    return False


def _check(args: argparse.Namespace) -> int:
    env = {}
    for pair in args.env:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            print(f"mce: --env takes KEY=VALUE, not {pair!r}", file=sys.stderr)
            return EXIT_INVALID
        env[key] = value
    try:
        body = args.body.read_bytes() if args.body is not None else b"{}"
    except OSError as exc:
        print(f"mce: --body {args.body}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    options = check.Options(
        body=body,
        content_type=args.content_type,
        accept=args.accept,
        model=args.model,
        multi_model=args.multi_model,
        env=env,
        startup_timeout=args.startup_timeout,
        invoke_timeout=args.invoke_timeout,
        stop_grace=args.stop_grace,
    )
    if args.model is not None and not args.model.is_dir():
        print(f"mce: --model {args.model} is not a folder (unpack a model.tar.gz first)", file=sys.stderr)
        return EXIT_INVALID
    subject: check.Subject
    if "--" in args.argv:
        subject = check.Command(args.argv[args.argv.index("--") + 1 :])
    elif len(args.what) == 1:
        try:
            subject = check.Image(docker.image(args.what[0], pull=False))
        except docker.DockerError as exc:
            print(f"mce: {exc}", file=sys.stderr)
            return EXIT_FAILED
    else:
        print("mce: check takes one IMAGE, or -- COMMAND ARGS... for a command run natively", file=sys.stderr)
        return EXIT_INVALID
    report = check.check(subject, options)
    print(report.json() if args.json else report.table())
    return EXIT_OK if report.passed else EXIT_INVALID


def _status(args: argparse.Namespace) -> int:
    from gateway.status import local_status, status

    url = args.url.rstrip("/")
    if "://" not in url:
        url = "http://" + url  # `mce status 127.0.0.1:8080`
    try:
        print(local_status(url) or status(url))
    except (OSError, ValueError, KeyError) as exc:
        print(f"mce: no endpoint answers at {args.url} ({exc})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _render(args: argparse.Namespace) -> int:
    if args.endpoint is not None:
        if args.format != "kubernetes":
            print("mce: --endpoint renders for kubernetes only; compose takes a document", file=sys.stderr)
            return EXIT_INVALID
        return _render_deployed(args)
    if args.file is None:
        print("mce: render needs an endpoint document (or, for kubernetes, --endpoint NAME)", file=sys.stderr)
        return EXIT_INVALID
    endpoint = _load(args.file)
    if endpoint is None:
        return EXIT_INVALID
    if args.format == "kubernetes":
        from gateway import kubernetes

        if args.output is None:
            print("mce: render kubernetes writes several files: give the folder with -o DIR", file=sys.stderr)
            return EXIT_INVALID
        try:
            files = kubernetes.render(
                endpoint,
                registry=args.registry,
                source=args.file,
                invocations_per_pod=args.invocations_per_pod,
            )
        except RenderError as exc:
            print(f"mce: {exc}", file=sys.stderr)
            return EXIT_INVALID
        args.output.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (args.output / name).write_text(text)
        return EXIT_OK
    out_dir = args.output.parent if args.output is not None else Path.cwd()
    try:
        text = render(endpoint, Path(args.file), out_dir, port=args.port)
    except RenderError as exc:
        print(f"mce: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return EXIT_OK


def _fetch_model(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from gateway.launch.modeldata import ModelDataError, model_directory

    with tempfile.TemporaryDirectory(dir=args.folder.parent if args.folder.parent.exists() else None) as work:
        try:
            extracted = model_directory(args.url, Path.cwd(), Path(work))
        except ModelDataError as exc:
            print(f"mce: {exc}", file=sys.stderr)
            return EXIT_FAILED
        args.folder.mkdir(parents=True, exist_ok=True)
        if not extracted.is_relative_to(work):  # a local folder: used where it is, so copied
            shutil.copytree(extracted, args.folder, dirs_exist_ok=True)
            return EXIT_OK
        for item in extracted.iterdir():
            shutil.move(str(item), args.folder / item.name)
    return EXIT_OK


MAX_WORKERS = 64


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"--workers is a number of processes from 1 to {MAX_WORKERS}")
    return int(value)


def _options(args: argparse.Namespace, access: Access | None) -> Options:
    # with --access, ARNs are the access file's (its Region and Account), so policies and answers agree
    region, account = (access.region, access.account) if access is not None else (args.region, args.account)
    return Options(
        region=region,
        account=account,
        host=args.host,
        port=args.port,
        allow_hosts=tuple(args.allow_hosts),
        metrics=not args.no_metrics,
        access_log=args.access_log,
        access=access,
        limits=_limits(args),
        shutdown_grace=args.shutdown_grace,
    )


async def _listen(gateway: Gateway) -> str | None:
    """Open the front door: its URL, or None after saying why it cannot listen."""
    options = gateway.options
    try:
        host, port = await gateway.listen()
    except OSError as exc:
        print(f"mce: cannot listen on {options.host}:{options.port}: {exc.strerror or exc}", file=sys.stderr)
        return None
    _freeze_heap()
    return f"http://{host}:{port}"


async def _serve_endpoint(endpoint: Endpoint, args: argparse.Namespace, access: Access | None) -> int:
    options = _options(args, access)
    if args.worker_dir is not None and args.worker_index is not None:  # one of mce serve --workers'
        options = dataclasses.replace(options, siblings=Siblings(args.worker_dir, *args.worker_index))
    gateway = Gateway(options)
    service = await gateway.add(
        endpoint, base=Path(args.file).resolve().parent, model_cache=args.model_cache, variant=args.variant
    )
    gateway.mount(endpoint.EndpointName, [(service, 1.0)], AsyncConfig.of(endpoint))
    stop = _stop_event()
    url = await _listen(gateway)
    if url is None:
        await gateway.close()
        return EXIT_FAILED
    print(
        f"mce-gateway: endpoint {endpoint.EndpointName} ({endpoint.layout()}) listening on {url}", flush=True
    )
    await stop.wait()
    await gateway.close()
    return EXIT_OK


async def _up_local(
    documents: list[tuple[Endpoint, Path]], images: ImageMap, args: argparse.Namespace, access: Access | None
) -> int:
    """The local SageMaker: the control plane, the endpoints it holds (brought back from --state), and
    the documents' endpoints, started before the port opens."""
    began = time.monotonic()
    console = Console()
    if args.port != 0 and not port_free(args.host, args.port):
        print(
            f"mce: port {args.port} on {args.host} is in use (another `mce up`?); stop it or pass --port",
            file=sys.stderr,
        )
        return EXIT_FAILED
    state_dir = args.state.resolve()
    for left in Registry(state_dir / PROCESSES).stop_left():  # an earlier mce, killed, left them running
        console.message(f"stopped a container an earlier mce left running on this state: {left}")
    try:
        state = State(state_dir / "mce.db")
    except StateError as exc:
        print(f"mce: {exc}", file=sys.stderr)
        return EXIT_FAILED
    local = LocalSageMaker.build(
        _options(args, access),
        state,
        images,
        state_dir,
        console,
        startup_timeout=args.startup_timeout,
        describe_hold=args.describe_hold,
        serverless_idle=args.serverless_idle,
        data_roots=args.data_roots,
    )
    gateway, endpoints, control = local.gateway, local.endpoints, local.control
    region = gateway.options.region
    stop = _stop_event()
    stopping = asyncio.create_task(stop.wait())
    deployments: list[Deployment] = []

    bidirectional: bidi.Listener | None = None

    async def shut_down() -> None:
        stopping.cancel()
        if bidirectional is not None:
            bidirectional.server.close()
        await gateway.close()
        await endpoints.close()
        for deployment in deployments:
            await deployment.stop(args.shutdown_grace)
        state.close()

    for endpoint, file in documents:
        deployment = Deployment(
            gateway,
            endpoint,
            base=file.resolve().parent,
            run_dir=(args.run_dir or state_dir / endpoint.EndpointName).resolve(),
            console=console,
            model_cache=args.model_cache,
            logs=state_dir,
        )
        deployments.append(deployment)
        starting = asyncio.create_task(deployment.start(args.startup_timeout))
        done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        failure = starting.exception() if starting in done else None
        if starting not in done:
            console.message(f"stopping before the endpoint was up ({signal.Signals(stop.signum).name})")
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        if starting not in done or failure is not None:
            await shut_down()
            if isinstance(failure, (LaunchError, OSError)):
                print(f"mce: {failure}", file=sys.stderr)
                return EXIT_INVALID
            if failure is not None:
                raise failure
            return 128 + stop.signum
        gateway.mount(endpoint.EndpointName, [(deployment.service, 1.0)], AsyncConfig.of(endpoint))
        control.adopt(deployment.endpoint)
    url = await _listen(gateway)
    if url is None:
        await shut_down()
        return EXIT_FAILED
    for deployment in deployments:
        print(summary(deployment.endpoint, url, time.monotonic() - began, deployment.run_dir), flush=True)
        print(f"mce-gateway: endpoint {deployment.endpoint.EndpointName} listening on {url}", flush=True)
        deployment.serve()
    await endpoints.restore()
    print(
        f"mce-gateway: local SageMaker (region {region}, state {state_dir}) listening on {url}\n"
        f"  export AWS_ENDPOINT_URL_SAGEMAKER={url} AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url}",
        flush=True,
    )
    if args.http2_port is not None:
        try:
            bidirectional, cert = await _http2(gateway, args, state_dir, access)
        except (OSError, ValueError) as exc:
            print(f"mce: the HTTP/2 listener cannot start: {exc}", file=sys.stderr)
            await shut_down()
            return EXIT_FAILED
        http2 = f"https://localhost:{bidirectional.port}"
        print(
            f"mce-gateway: bidirectional streams (HTTP/2 over TLS) on {http2}\n"
            f"  export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2={http2} SSL_CERT_FILE={cert}",
            flush=True,
        )
    await stop.wait()
    console.message("stopping: the gateway, then every container (SIGTERM, SIGKILL after the grace period)")
    await shut_down()
    console.message("stopped")
    return EXIT_OK


async def _http2(
    gateway: Gateway, args: argparse.Namespace, state_dir: Path, access: Access | None
) -> tuple[bidi.Listener, Path]:
    """The HTTP/2 listener for bidirectional streams, and the certificate its clients must trust."""
    if access is not None:
        raise ValueError(
            "--http2-port is not served under --access yet (its event signatures are not checked)"
        )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        cert, key = args.tls_cert.resolve(), args.tls_key.resolve()
    else:
        cert, key = tls.self_signed(state_dir / "tls")
    context = tls.server_context(cert, key)
    listener = await bidi.listen(gateway.door, gateway.door.origins, context, args.host, args.http2_port)
    return listener, cert


class _StopEvent(asyncio.Event):
    signum = 0


def _stop_event() -> _StopEvent:
    """Set by SIGINT or SIGTERM; remembers which."""
    event = _StopEvent()
    loop = asyncio.get_running_loop()

    def received(signum: int) -> None:
        event.signum = signum
        event.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, received, signum)
    return event


def _freeze_heap() -> None:
    """Everything made at start-up (modules, the endpoint, pools) lives as long as the process: move it out
    of the garbage collector's sight, so its full collections do not pause requests walking it."""
    gc.collect()
    gc.freeze()


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # botocore (model data from S3) tells where it found credentials on every client: not news
    logging.getLogger("botocore").setLevel(max(logging.WARNING, logging.getLogger().level))


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
