"""Containers under Docker, run as SageMaker runs them: `docker run <image> serve`.

The `docker` CLI talks to whichever engine its environment names (DOCKER_HOST, the default socket). A
container gets SageMaker's environment (its `Environment`; in a multi-container endpoint
SAGEMAKER_BIND_TO_PORT and SAGEMAKER_SAFE_PORT_RANGE; SAGEMAKER_MULTI_MODEL for a MultiModel container),
its model data read-only at /opt/ml/model, and its port published on 127.0.0.1 only. `docker run` stays
attached, so the supervisor watches, logs and stops it like a native process (SIGTERM reaches the
container through the CLI); `docker rm -f` by name afterwards makes sure nothing is left, and every
container carries a label naming the run folder it belongs to, so what a killed `mce` left behind is
removed when that folder is used again.

Every call here blocks (it runs the CLI): call from a thread.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DOCKER = "docker"
RUN_DIR_LABEL = "io.mce-gateway.run-dir"
BIND_TO_PORT_LABEL = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"
MODEL_DIR = "/opt/ml/model"
CONTAINER_PORT = 8080  # where a single container serves (spec §5)
INSPECT_TIMEOUT = 30.0  # seconds for `docker version` and `docker image inspect`
PULL_TIMEOUT = 1800.0  # seconds: SageMaker's framework images are several GB


ISOLATED_NETWORK = "mce-isolated"  # EnableNetworkIsolation: an internal network, no route beyond this host
NETWORK_LABEL = "io.mce-gateway.network"
_handed_out: set[str] = set()  # isolated addresses given to containers by this process


class DockerError(Exception):
    """Docker cannot run the image; the message says why and what to do."""


@dataclass(frozen=True)
class Image:
    name: str
    labels: dict[str, str]

    @property
    def accepts_bind_to_port(self) -> bool:
        return self.labels.get(BIND_TO_PORT_LABEL) == "true"


def engine() -> str | None:
    """Why no Docker engine can be used, or None when one answers."""
    if shutil.which(DOCKER) is None:
        return "the docker command is not installed"
    try:
        found = _docker(["version", "--format", "{{.Server.Version}}"], INSPECT_TIMEOUT)
    except DockerError as exc:
        return str(exc)
    if found.returncode != 0:
        return f"no Docker engine answers ({_last_line(found.stderr)})"
    return None


def image(name: str, *, pull: bool = True) -> Image:
    """The image, pulled first if the engine does not have it; DockerError if it cannot be had."""
    reason = engine()
    if reason is not None:
        raise DockerError(f"Docker cannot run {name}: {reason}")
    found = _inspect(name)
    if found is None and pull:
        pulled = _docker(["pull", "--quiet", name], PULL_TIMEOUT)
        if pulled.returncode != 0:
            raise DockerError(
                f"the Docker engine has no image {name} and cannot pull it ({_last_line(pulled.stderr)}); "
                f"build or load it first (docker build -t {name} ..., docker load)"
            )
        found = _inspect(name)
    if found is None:
        raise DockerError(f"the Docker engine has no image {name}")
    return found


def run_argv(
    *,
    name: str,
    image: str,
    args: list[str],
    hostname: str,
    env: dict[str, str],
    publish: tuple[int, int],
    mounts: list[tuple[Path, str, bool]],
    run_dir: Path,
    isolated: str | None = None,
    memory: int | None = None,
) -> list[str]:
    """`docker run` in the foreground: removed when it exits, its port on loopback only.

    `publish`: (host port, container port); `mounts`: (host path, container path, read-only);
    `isolated`: its address on ISOLATED_NETWORK instead (nothing published: the host calls that address);
    `memory`: the container's memory limit in bytes."""
    argv = [DOCKER, "run", "--rm", "--name", name, "--hostname", hostname]
    if memory is not None:
        argv += ["--memory", str(memory)]
    argv += ["--label", f"{RUN_DIR_LABEL}={run_dir}"]
    if isolated is not None:
        argv += ["--network", ISOLATED_NETWORK, "--ip", isolated]
    else:
        argv += ["--publish", f"127.0.0.1:{publish[0]}:{publish[1]}"]
    for source, target, read_only in mounts:
        argv += ["--mount", f"type=bind,source={source},target={target}" + (",readonly" if read_only else "")]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    return [*argv, image, *args]


def isolated_address() -> str:
    """A free address on ISOLATED_NETWORK (created on first use), for `docker run --ip`: SageMaker's network
    isolation, where the container can reach nothing beyond this host, which reaches it at that address
    (an internal network publishes no ports).

    `--ip` needs a network whose subnet was given when it was made: the first time, Docker is let choose a
    free subnet, which the network is then made again with."""
    found = _network()
    if found is None:
        created = _docker(["network", "create", "--internal", ISOLATED_NETWORK], INSPECT_TIMEOUT)
        chosen = _network()
        _docker(["network", "rm", ISOLATED_NETWORK], INSPECT_TIMEOUT)
        if created.returncode != 0 or chosen is None:
            raise DockerError(f"cannot create the network {ISOLATED_NETWORK} ({_last_line(created.stderr)})")
        label = f"{NETWORK_LABEL}=isolated"
        made = _docker(
            [
                "network",
                "create",
                "--internal",
                "--subnet",
                str(chosen[0]),
                "--label",
                label,
                ISOLATED_NETWORK,
            ],
            INSPECT_TIMEOUT,
        )
        found = _network()
        if found is None:
            raise DockerError(f"cannot create the network {ISOLATED_NETWORK} ({_last_line(made.stderr)})")
    subnet, used = found
    for host in list(subnet.hosts())[1:]:  # the first is the bridge: this host's own address on it
        address = str(host)
        if address not in used and address not in _handed_out:
            _handed_out.add(address)
            return address
    raise DockerError(f"the network {ISOLATED_NETWORK} ({subnet}) has no free address left")


def _network() -> tuple[ipaddress.IPv4Network, set[str]] | None:
    """ISOLATED_NETWORK's subnet and the addresses its containers hold; None if it does not exist."""
    found = _docker(
        [
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}|{{range .Containers}}{{.IPv4Address}} {{end}}",
            ISOLATED_NETWORK,
        ],
        INSPECT_TIMEOUT,
    )
    if found.returncode != 0:
        return None
    subnets, _, held = found.stdout.strip().partition("|")
    networks = [ipaddress.ip_network(text) for text in subnets.split()]
    v4 = [network for network in networks if isinstance(network, ipaddress.IPv4Network)]
    if not v4:
        return None
    return v4[0], {text.partition("/")[0] for text in held.split()}


def remove_argv(name: str) -> list[str]:
    return [DOCKER, "rm", "--force", name]


def remove_leftovers(run_dir: Path) -> list[str]:
    """Remove containers an earlier run in `run_dir` left behind (it was killed); their names."""
    listed = _docker(
        ["ps", "--all", "--quiet", "--filter", f"label={RUN_DIR_LABEL}={run_dir}", "--format", "{{.Names}}"],
        INSPECT_TIMEOUT,
    )
    names = listed.stdout.split() if listed.returncode == 0 else []
    if names:
        _docker(["rm", "--force", *names], INSPECT_TIMEOUT)
    return names


def entrypoint(name: str) -> list[str] | None:
    """The image's ENTRYPOINT (exec form as a list; None if it has none or the image is absent)."""
    found = _docker(["image", "inspect", "--format", "{{json .Config.Entrypoint}}", name], INSPECT_TIMEOUT)
    if found.returncode != 0:
        return None
    value = json.loads(found.stdout or "null")
    return [str(part) for part in value] if value else None


def _inspect(name: str) -> Image | None:
    found = _docker(["image", "inspect", "--format", "{{json .Config.Labels}}", name], INSPECT_TIMEOUT)
    if found.returncode != 0:
        return None
    labels = json.loads(found.stdout or "null") or {}
    return Image(name, {str(k): str(v) for k, v in labels.items()})


def _docker(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [DOCKER, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise DockerError(f"`docker {args[0]}` did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise DockerError(f"cannot run docker: {exc.strerror}") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
