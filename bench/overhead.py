"""What the gateway costs, against direct calls and nginx, measured in one run on 127.0.0.1.

Backends are nginx `return 200` locations (they cost almost nothing) and a 1 MiB static answer; in front
of them, the gateway in Direct mode and nginx routing on the same header with a `map` and keep-alive
upstream pools (one worker, like the one gateway process), plus the gateway in Serial mode over three
backends. wrk drives each path in turn (POST, a JSON body, the routing header alternating between two
backends), rounds interleaved, medians reported:

    proxy    ~1 KiB bodies; c=1: p50/p99 and the latency each proxy adds; c=32: req/s, p50/p99, and the
             proxy process's CPU per request (utime+stime from /proc over the run / requests served)
    big      1 MiB request and 1 MiB answer, c=8: req/s, and the gateway's peak RSS (VmHWM) after each
             round: flat means it streams rather than piling up bodies
    serial   a 3-container Serial pipeline, c=1: latency added per hop, against one Direct hop
    models   (--models) the real containers of examples/mnist-direct.yaml (TorchServe, the TF Serving
             stand-in), c=4: throughput through the gateway as a fraction of calling them directly

Results: bench/results/overhead-<date>.md and .png (latency distributions). `--smoke` is a seconds-long
run for CI: it checks that every path answers, not how fast.

    bench/run [--seconds 10] [--rounds 3] [--models] [--smoke] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
INVOKE = "/endpoints/bench/invocations"
SMALL_ANSWER = '{"predictions": [[0.1, 0.9]]}'


@dataclass
class Sample:
    rps: float
    p50_us: float
    p99_us: float
    cpu_us: float | None
    errors: int
    cdf: list[tuple[float, float]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def provenance(command: str) -> list[str]:
    """A result's first lines: when, which commit, on what, and the command that reproduces it."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    ).stdout.strip()
    return [
        f"- {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}; "
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        f"- reproduce: `{command}`",
    ]


def publish(lines: list[str], out: Path, name: str) -> None:
    """Print a result and keep it as bench/results-style `<name>-<date>.md` in `out`."""
    table = "\n".join(lines) + "\n"
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}-{datetime.datetime.now(datetime.UTC):%Y-%m-%d}.md").write_text(table)


def p99(values: list[float]) -> float:
    """The 99th percentile of latencies (nearest rank)."""
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.05)


PROXY_CPU = 0  # the measured proxies (nginx's worker, each gateway) run here, alone
REST_CPUS = {1}  # wrk, the backends and this script run here (with one core, all share it)


def pin(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn that keeps a child (and what it starts) on one CPU; None where there is one core."""
    if cpu is None or (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Nginx:
    """One nginx (master + 1 worker) with the given `http {}` body; its worker is the measured process."""

    def __init__(
        self, work: Path, name: str, http_body: str, *, cpu: int | None = None, workers: int = 1
    ) -> None:
        self.dir = work / name
        self.dir.mkdir()
        conf = self.dir / "nginx.conf"
        conf.write_text(
            f"worker_processes {workers};\ndaemon off;\npid {self.dir}/nginx.pid;\n"
            f"error_log {self.dir}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {self.dir}/body;\n  proxy_temp_path "
            f"{self.dir}/proxy;\n"
            f"  fastcgi_temp_path {self.dir}/fcgi;\n  uwsgi_temp_path {self.dir}/uwsgi;\n  scgi_temp_path "
            f"{self.dir}/scgi;\n"
            f"  keepalive_requests 1000000;\n  client_max_body_size 8m;\n{http_body}\n}}\n"
        )
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(self.dir)], stderr=subprocess.DEVNULL, preexec_fn=pin(cpu)
        )

    def worker_pids(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Gateway:
    def __init__(
        self,
        work: Path,
        name: str,
        document: dict[str, object],
        *extra: str,
        source: Path = ROOT,
        cpu: int | None = PROXY_CPU,
    ) -> None:
        """`source`: the directory `gateway` is imported from (a compiled copy: `compile_gateway`)."""
        path = work / f"{name}.json"
        path.write_text(json.dumps(document))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                str(path),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            cwd=source,
            preexec_fn=pin(cpu),
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def nginx_router(port: int, backends: dict[str, int]) -> str:
    """nginx's `http {}` body that routes as the gateway does in Direct mode: by the
    X-Amzn-SageMaker-Target-Container-Hostname header, to keep-alive upstream pools (hostname -> port)."""
    upstreams = "\n".join(
        f"  upstream {name} {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 1000000; }}"
        for name, backend in backends.items()
    )
    routes = " ".join(f"{name} {name};" for name in backends)
    return f"""  map $http_x_amzn_sagemaker_target_container_hostname $container {{ {routes} }}
{upstreams}
  server {{
    listen 127.0.0.1:{port};
    location = /ping {{ return 200; }}
    location / {{
      proxy_pass http://$container/invocations; proxy_http_version 1.1; proxy_set_header Connection "";
    }}
  }}"""


def direct_document(backends: dict[str, int]) -> dict[str, object]:
    """Endpoint `bench` in Direct mode, one `sagemaker` container per backend (hostname -> port)."""
    return {
        "EndpointName": "bench",
        "InferenceExecutionConfig": {"Mode": "Direct"},
        "Containers": [
            {
                "ContainerHostname": name,
                "Backend": {"Protocol": "sagemaker", "Url": f"http://127.0.0.1:{port}"},
            }
            for name, port in backends.items()
        ],
    }


def small_backends(work: Path, name: str = "backends") -> tuple[Nginx, dict[str, object]]:
    """Two nginx `return 200` backends and the Direct endpoint document that routes to them by the
    header (alpha, beta): the proxy path the other bench scripts measure alone (`--against` and friends).
    Call `wait_http` on a gateway in front of them before measuring."""
    ports = [free_port() for _ in range(2)]
    servers = [
        f"  server {{ listen 127.0.0.1:{p}; location / {{ return 200 '{SMALL_ANSWER}'; }} }}" for p in ports
    ]
    return Nginx(work, name, "\n".join(servers)), direct_document(
        dict(zip(("alpha", "beta"), ports, strict=True))
    )


def needs_nginx_and_wrk() -> bool:
    """Whether nginx and wrk are here; says so when not."""
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"bench: {' and '.join(missing)} missing; bench/run installs them", file=sys.stderr)
    return not missing


def checkout(work: Path, revision: str, folder: str = "earlier") -> Path:
    """The `gateway` package as commit `revision` has it (with its pyproject.toml and setup.py, which say
    how it compiles), in a folder of its own (git archive)."""
    target = work / folder
    target.mkdir()

    def present(name: str) -> bool:
        command = ["git", "cat-file", "-e", f"{revision}:{name}"]
        found = subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
        return found.returncode == 0

    paths = ["gateway", *(name for name in ("pyproject.toml", "setup.py") if present(name))]
    command = ["git", "archive", revision, *paths]
    archive = subprocess.run(command, cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def compile_gateway(work: Path, source: Path = ROOT, folder: str = "compiled") -> Path | None:
    """A copy of `source`'s gateway/ with the request path compiled by mypyc, as a wheel builds it (setup.py,
    D24, D54); None, with the reason printed, where mypyc or a C compiler is missing or the tree does not
    compile with this mypyc (an older commit under a newer mypy, D56)."""
    if importlib.util.find_spec("mypyc") is None or shutil.which("cc") is None:
        print("bench: mypyc or a C compiler is missing; the compiled gateway is left out", file=sys.stderr)
        return None
    project = source / "pyproject.toml"
    if not project.is_file() or "[tool.mce-gateway]" not in project.read_text():
        print(f"bench: {source} names no modules to compile; left out compiled", file=sys.stderr)
        return None
    copy = work / folder
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(source / "gateway", copy / "gateway", ignore=ignore)
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(source / name, copy / name)
    print("bench: compiling the request path with mypyc (about a minute)", file=sys.stderr)
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=copy,
        env={**os.environ, "MCE_COMPILE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # mypyc reports type errors on stdout
        text=True,
    )
    if build.returncode != 0:  # an older tree may not type-check under this mypy (D56): say so, go on
        lines = build.stdout.strip().splitlines() or ["(no message)"]
        reason = next((line for line in lines if "error:" in line), lines[-1])
        print(
            f"bench: {source} does not compile with this mypyc ({reason}); left out compiled", file=sys.stderr
        )
        return None
    where = subprocess.run(
        [sys.executable, "-c", "import gateway.server; print(gateway.server.__file__)"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not where.endswith(".so"):
        raise RuntimeError(f"the compiled copy imports {where}, not a compiled module")
    return copy


def run_wrk(
    url: str,
    path: str,
    connections: int,
    seconds: float,
    body: int,
    targets: tuple[str, str],
    endpoints: int = 0,
) -> dict:
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "wrk.lua"),
            url,
            "--",
            path,
            *targets,
            str(body),
            *([str(endpoints)] if endpoints else []),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def measure(
    url: str,
    path: str,
    pids: list[int],
    connections: int,
    seconds: float,
    *,
    body: int = 1024,
    targets: tuple[str, str] = ("alpha", "beta"),
    endpoints: int = 0,
) -> Sample:
    before = cpu_seconds(pids) if pids else 0.0
    result = run_wrk(url, path, connections, seconds, body, targets, endpoints)
    after = cpu_seconds(pids) if pids else 0.0
    requests = result["requests"]
    return Sample(
        rps=requests / (result["duration_us"] / 1e6),
        p50_us=result["p50_us"],
        p99_us=result["p99_us"],
        cpu_us=(after - before) * 1e6 / requests if pids and requests else None,
        errors=int(result["socket_errors"] + result["non_2xx"]),
        cdf=[(p, v) for p, v in result["cdf"]],
    )


class Results:
    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], list[Sample]] = {}
        self.notes: dict[str, list[float]] = {}

    def add(self, scenario: str, path: str, sample: Sample) -> None:
        self.samples.setdefault((scenario, path), []).append(sample)
        cpu = f"  cpu/req {sample.cpu_us:5.1f} us" if sample.cpu_us is not None else ""
        print(
            f"  {scenario:<10} {path:<16} {sample.rps:9.0f} req/s  p50 {sample.p50_us:7.0f} us  "
            f"p99 {sample.p99_us:7.0f} us{cpu}  errors {sample.errors}",
            file=sys.stderr,
        )

    def med(self, scenario: str, path: str, attribute: str) -> float:
        values = [getattr(s, attribute) for s in self.samples.get((scenario, path), [])]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    def errors(self) -> int:
        return sum(s.errors for group in self.samples.values() for s in group)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each wrk run (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; medians reported (default 3)"
    )
    parser.add_argument("--models", action="store_true", help="also measure the real model containers")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds-long run that checks every path answers"
    )
    parser.add_argument("--models-only", action="store_true", help="only the real model containers")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the table and chart go")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also run the gateway of this commit (e.g. HEAD~1) in the same rounds, as its tree runs and "
        "compiled: a regression shows the day it lands",
    )
    parser.add_argument(
        "--against-compiled",
        metavar="DIR",
        type=Path,
        help="with --against: its compiled build, prepared by hand (a commit the installed mypy cannot "
        "compile, D56), instead of compiling it here",
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds = 1.0, 1
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing; bench/run installs it", file=sys.stderr)
            return 2
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, REST_CPUS)  # children (wrk, the backends) inherit it; proxies are pinned
    work = Path(tempfile.mkdtemp(prefix="mce-bench-"))
    results = Results()
    stoppers: list[object] = []
    try:
        if not args.models_only:
            proxies(work, args, results, stoppers)
        if args.models or args.models_only:
            from models import measure_models

            measure_models(work, args, results, measure)
    finally:
        for item in reversed(stoppers):
            item.stop()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)
    table = report(results, args)
    print(table)
    if results.errors():
        print(f"bench: {results.errors()} requests failed", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    name = ("models-" if args.models_only else "overhead-") + datetime.datetime.now(datetime.UTC).strftime(
        "%Y-%m-%d"
    )
    (args.out / f"{name}.md").write_text(table + f"\n![latency distributions]({name}.png)\n")
    chart(results, args.out / f"{name}.png")
    return 0


def proxies(work: Path, args: argparse.Namespace, results: Results, stoppers: list[object]) -> None:
    small = [free_port() for _ in range(3)]
    big = [free_port() for _ in range(2)]
    (work / "static").mkdir()
    (work / "static" / "answer.bin").write_bytes(os.urandom(1024 * 1024))
    for path in (work, work / "static", work / "static" / "answer.bin"):
        path.chmod(0o755)  # nginx's workers run as an unprivileged user
    servers = [
        f"  server {{ listen 127.0.0.1:{p}; location / {{ return 200 '{SMALL_ANSWER}'; }} }}" for p in small
    ]
    # nginx serves static files to GET only; error_page turns the POST's 405 into the file with 200
    servers += [
        f"  server {{ listen 127.0.0.1:{p}; location / {{ root {work}/static; try_files /answer.bin =404; "
        "error_page 405 =200 $uri; } }"
        for p in big
    ]
    stoppers.append(Nginx(work, "backends", "\n".join(servers)))
    names = {"alpha": small[0], "beta": small[1], "gamma": small[2], "big-a": big[0], "big-b": big[1]}
    proxy_port = free_port()
    nginx = Nginx(work, "proxy", nginx_router(proxy_port, names), cpu=PROXY_CPU)
    stoppers.append(nginx)

    def container(name: str, port: int) -> dict[str, object]:
        return {
            "ContainerHostname": name,
            "Backend": {"Protocol": "sagemaker", "Url": f"http://127.0.0.1:{port}"},
        }

    every = direct_document(names)
    direct = Gateway(work, "direct", every)
    stoppers.append(direct)
    bare = Gateway(work, "bare", every, "--no-metrics")
    stoppers.append(bare)
    serial = Gateway(
        work,
        "serial",
        {
            "EndpointName": "bench",
            "InferenceExecutionConfig": {"Mode": "Serial"},
            "Containers": [container(n, names[n]) for n in ("alpha", "beta", "gamma")],
        },
    )
    stoppers.append(serial)
    gateways = [direct, bare, serial]
    source = compile_gateway(work)
    if source is not None:
        compiled = Gateway(work, "compiled", every, source=source)
        stoppers.append(compiled)
        gateways.append(compiled)
    earlier = earlier_compiled = None
    if args.against:
        tree = checkout(work, args.against)
        earlier = Gateway(work, "earlier", every, source=tree)
        stoppers.append(earlier)
        gateways.append(earlier)
        built = args.against_compiled or compile_gateway(work, tree, "earlier-compiled")
        if built is not None:
            earlier_compiled = Gateway(work, "earlier-compiled", every, source=built.resolve())
            stoppers.append(earlier_compiled)
            gateways.append(earlier_compiled)
    for port in (*small, *big, proxy_port, *(gateway.port for gateway in gateways)):
        wait_http(f"http://127.0.0.1:{port}/ping")
    backend = f"http://127.0.0.1:{small[0]}"
    paths = {
        "direct": (backend, []),
        "nginx": (f"http://127.0.0.1:{proxy_port}", nginx.worker_pids()),
        "gateway": (direct.url, [direct.proc.pid]),
        "gateway, no metrics": (bare.url, [bare.proc.pid]),
    }
    if source is not None:
        paths["gateway, compiled"] = (compiled.url, [compiled.proc.pid])
    if earlier is not None:
        paths[f"gateway at {args.against}"] = (earlier.url, [earlier.proc.pid])
    if earlier_compiled is not None:
        paths[f"gateway at {args.against}, compiled"] = (earlier_compiled.url, [earlier_compiled.proc.pid])
    for url, _ in paths.values():
        run_wrk(url, INVOKE, 8, 1, 1024, ("alpha", "beta"))  # warm pools and caches
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
        # each round runs the paths in the other order: a cell right after another is not always the same
        # one's (the gateway right after nginx showed a c=1 difference that was the order's, 2026-12-07)
        order = list(paths.items()) if round_ % 2 == 0 else list(reversed(paths.items()))
        for connections in (1, 32):
            for name, (url, pids) in order:
                results.add(
                    f"proxy c={connections}", name, measure(url, INVOKE, pids, connections, args.seconds)
                )
        big_paths = {
            "direct": (f"http://127.0.0.1:{big[0]}", []),
            "nginx": paths["nginx"],
            "gateway": paths["gateway"],
        }
        for name, (url, pids) in big_paths.items():
            results.add(
                "big",
                name,
                measure(url, INVOKE, pids, 8, args.seconds, body=1024 * 1024, targets=("big-a", "big-b")),
            )
        results.notes.setdefault("gateway peak RSS (MB)", []).append(peak_rss_mb(direct.proc.pid))
        for name, url in (("direct", backend), ("gateway", direct.url)):
            results.add("hop", name, measure(url, INVOKE, [], 1, args.seconds))
        results.add(
            "hop",
            "serial x3",
            measure(serial.url, INVOKE, [serial.proc.pid], 1, args.seconds, targets=("-", "-")),
        )


def report(results: Results, args: argparse.Namespace) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr.strip()
    options = (
        " --smoke"
        if args.smoke
        else (
            f" --seconds {args.seconds:g} --rounds {args.rounds}"
            if (args.seconds, args.rounds) != (10.0, 3)
            else ""
        )
    )
    options += " --models" if args.models else ""
    options += f" --against {args.against}" if args.against else ""
    options += f" --against-compiled {args.against_compiled}" if args.against_compiled else ""
    options += " --models-only" if args.models_only else ""
    lines = [
        "# Gateway overhead",
        "",
        (
            f"- {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit "
            f"{commit.stdout.strip() or 'unknown'}; "
            f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {nginx}"
        ),
        f"- {args.rounds} interleaved round(s) of {args.seconds:g} s per cell, medians; reproduce: "
        f"`bench/run{options}`",
    ]
    if any(key[0] == "proxy c=1" for key in results.samples):
        lines += _proxy_sections(results)
        if args.against:
            lines += _against_section(results, args.against)
    lines += _model_section(results)
    return "\n".join(lines) + "\n"


def _proxy_sections(results: Results) -> list[str]:
    med = results.med
    lines = [
        "",
        "## Routing one request (~1 KiB POST, header alternating between two nginx `return 200` backends)",
        "",
        "| path | c=1 p50 (us) | c=1 p99 (us) | added p50 (us) | c=32 req/s | c=32 p50 (us) | c=32 p99 (us) "
        "| CPU/req (us) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = med("proxy c=1", "direct", "p50_us")
    for name in dict.fromkeys(
        ["direct", "nginx", "gateway", "gateway, no metrics", "gateway, compiled"]
        + [key[1] for key in results.samples if key[0] == "proxy c=1"]
    ):
        if ("proxy c=1", name) not in results.samples:
            continue
        added = "-" if name == "direct" else f"{med('proxy c=1', name, 'p50_us') - base:.0f}"
        cpu = med("proxy c=32", name, "cpu_us")
        lines.append(
            f"| {name} | {med('proxy c=1', name, 'p50_us'):.0f} | {med('proxy c=1', name, 'p99_us'):.0f} | "
            f"{added} | "
            f"{med('proxy c=32', name, 'rps'):.0f} | {med('proxy c=32', name, 'p50_us'):.0f} | "
            f"{med('proxy c=32', name, 'p99_us'):.0f} | {'-' if cpu != cpu else f'{cpu:.1f}'} |"
        )
    gateway_added = med("proxy c=1", "gateway", "p50_us") - base
    nginx_added = med("proxy c=1", "nginx", "p50_us") - base
    hop_base = med("hop", "direct", "p50_us")
    direct_hop = med("hop", "gateway", "p50_us") - hop_base
    # a 3-container pipeline makes 3 container calls by nature: what the gateway adds per hop is the rest
    serial_hop = (med("hop", "serial x3", "p50_us") - 3 * hop_base) / 3
    extra_hop = (med("hop", "serial x3", "p50_us") - med("hop", "gateway", "p50_us")) / 2
    rss = results.notes.get("gateway peak RSS (MB)", [])
    metrics_cpu = med("proxy c=32", "gateway", "cpu_us") - med("proxy c=32", "gateway, no metrics", "cpu_us")
    metrics_p50 = med("proxy c=1", "gateway", "p50_us") - med("proxy c=1", "gateway, no metrics", "p50_us")
    lines += [
        "",
        "## Per core: the three headline ratios",
        "",
        f"Each proxy (nginx's one worker, each gateway) runs alone on CPU {PROXY_CPU}; wrk and the backends "
        "on the other CPU. 'compiled': the request path built by mypyc, as a wheel is (D24, D54).",
        "",
        "| gateway | c=32 req/s vs nginx (>= 0.8x) | c=32 CPU/req vs nginx (<= 1.5x) "
        "| c=1 added p50 vs nginx (<= 1.3x) |",
        "| --- | ---: | ---: | ---: |",
        *(
            _headline(results, name, base)
            for name in ("gateway", "gateway, compiled")
            if ("proxy c=1", name) in results.samples
        ),
        "",
        "## Against the targets",
        "",
        "| measure | gateway | nginx | ratio | target |",
        "| --- | ---: | ---: | ---: | --- |",
        (
            f"| c=32 throughput (req/s) | {med('proxy c=32', 'gateway', 'rps'):.0f} | "
            f"{med('proxy c=32', 'nginx', 'rps'):.0f} | "
            f"{med('proxy c=32', 'gateway', 'rps') / med('proxy c=32', 'nginx', 'rps'):.2f}x | >= 0.8x |"
        ),
        (
            f"| c=32 CPU per request (us) | {med('proxy c=32', 'gateway', 'cpu_us'):.1f} | "
            f"{med('proxy c=32', 'nginx', 'cpu_us'):.1f} | "
            f"{med('proxy c=32', 'gateway', 'cpu_us') / med('proxy c=32', 'nginx', 'cpu_us'):.2f}x | <= 1.5x "
            "|"
        ),
        f"| c=1 added p50 (us) | {gateway_added:.0f} | {nginx_added:.0f} | "
        f"{gateway_added / nginx_added:.2f}x | <= 1.3x |",
        (
            f"| c=1 p99 (us) | {med('proxy c=1', 'gateway', 'p99_us'):.0f} | "
            f"{med('proxy c=1', 'nginx', 'p99_us'):.0f} | "
            f"{med('proxy c=1', 'gateway', 'p99_us') / med('proxy c=1', 'nginx', 'p99_us'):.2f}x | <= 1.0x |"
        ),
        (
            f"| 1 MiB in, 1 MiB out, c=8 (req/s) | {med('big', 'gateway', 'rps'):.0f} | "
            f"{med('big', 'nginx', 'rps'):.0f} | "
            f"{med('big', 'gateway', 'rps') / med('big', 'nginx', 'rps'):.2f}x | >= 1.0x |"
        ),
        f"| gateway peak RSS after each round (MB) | {', '.join(f'{r:.0f}' for r in rss)} | | | flat |",
        (
            f"| Serial: added p50 per hop (us) | {serial_hop:.0f} | (one Direct hop: {direct_hop:.0f}) | "
            f"{serial_hop / direct_hop:.2f}x | <= 1.2x |"
        ),
        "",
        (
            f"Metrics, Server-Timing and trace context cost {metrics_cpu:.1f} us "
            f"of CPU per request at c=32 (gateway {med('proxy c=32', 'gateway', 'cpu_us'):.1f} us, with "
            f"--no-metrics {med('proxy c=32', 'gateway, no metrics', 'cpu_us'):.1f} us) and "
            f"{metrics_p50:.0f} us of p50 at c=1."
        ),
        "",
        (
            f"1 MiB direct from the backend: {med('big', 'direct', 'rps'):.0f} req/s. Serial: 3 hops p50 "
            f"{med('hop', 'serial x3', 'p50_us'):.0f} us, 1 Direct hop {med('hop', 'gateway', 'p50_us'):.0f} "
            "us, the "
            f"backend alone {hop_base:.0f} us; per hop = (3 hops - 3 x backend alone) / 3, where 'backend "
            "alone' is "
            "what wrk measures, its own client costs included; each hop beyond the first costs "
            f"{extra_hop:.0f} us "
            "end to end, the container call included."
        ),
    ]
    return lines


def _against_section(results: Results, revision: str) -> list[str]:
    """This commit's gateway, as the tree runs it and as the wheel builds it (compiled, D54), against
    `revision`'s as its tree runs it, measured in the same rounds."""
    med, earlier = results.med, f"gateway at {revision}"
    base = med("proxy c=1", "direct", "p50_us")
    builds = [name for name in ("gateway", "gateway, compiled") if ("proxy c=32", name) in results.samples]
    measures = [
        ("c=32 throughput (req/s)", lambda name: med("proxy c=32", name, "rps")),
        ("c=32 CPU per request (us)", lambda name: med("proxy c=32", name, "cpu_us")),
        ("c=1 added p50 (us)", lambda name: med("proxy c=1", name, "p50_us") - base),
    ]
    header = " | ".join(f"{'this commit' if name == 'gateway' else 'compiled'} | ratio" for name in builds)
    lines = [
        "",
        f"## Against {revision} (the same rounds)",
        "",
        "'this commit': the tree as it runs (an editable install); 'compiled': as a wheel builds it (D54).",
        "",
        f"| measure | {revision} | {header} |",
        "| --- | ---: |" + " ---: | ---: |" * len(builds),
    ]
    for what, value in measures:
        then = value(earlier)
        cells = " | ".join(f"{value(name):.1f} | {value(name) / then:.2f}x" for name in builds)
        lines.append(f"| {what} | {then:.1f} | {cells} |")
    both = f"{earlier}, compiled"
    if ("proxy c=32", both) in results.samples and "gateway, compiled" in builds:
        lines += [
            "",
            f"Compiled, each as a wheel builds it, in the same rounds: {revision}'s against this commit's.",
            "",
            f"| measure | {revision}, compiled | compiled | ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        for what, value in measures:
            then, now = value(both), value("gateway, compiled")
            lines.append(f"| {what} | {then:.1f} | {now:.1f} | {now / then:.2f}x |")
    return lines


def _headline(results: Results, name: str, base: float) -> str:
    med = results.med
    rps = med("proxy c=32", name, "rps") / med("proxy c=32", "nginx", "rps")
    cpu = med("proxy c=32", name, "cpu_us") / med("proxy c=32", "nginx", "cpu_us")
    added = (med("proxy c=1", name, "p50_us") - base) / (med("proxy c=1", "nginx", "p50_us") - base)
    return f"| {name} | {rps:.2f}x | {cpu:.2f}x | {added:.2f}x |"


def _model_section(results: Results) -> list[str]:
    med = results.med
    lines: list[str] = []
    models = [key for key in results.samples if key[0] == "models"]
    if models:
        lines += [
            "",
            "## The real containers (examples/mnist-direct.yaml)",
            "",
            "| path | c=4 req/s | c=4 p50 (us) | c=4 p99 (us) | of direct | c=1 p50 (us) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for _, path in models:
            direct_rps = med("models", f"{path.split()[0]} direct REST", "rps")
            lines.append(
                f"| {path} | {med('models', path, 'rps'):.0f} | {med('models', path, 'p50_us'):.0f} | "
                f"{med('models', path, 'p99_us'):.0f} | {med('models', path, 'rps') / direct_rps:.0%} | "
                f"{med('models c=1', path, 'p50_us'):.0f} |"
            )
        lines.append("")
        lines += [
            f"- {name}: {values[0]:.1f}"
            for name, values in results.notes.items()
            if "container" in name or "cold" in name
        ]
    return lines


def chart(results: Results, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is missing; no chart", file=sys.stderr)
        return
    panels = [
        key
        for key in ("proxy c=1", "proxy c=32", "big", "hop", "models c=1")
        if any(k[0] == key for k in results.samples)
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, scenario in zip(axes[0], panels, strict=True):
        for (name, path_name), samples in results.samples.items():
            if name != scenario:
                continue
            cdf = samples[len(samples) // 2].cdf
            axis.plot([v / 1000 for _, v in cdf], [p for p, _ in cdf], label=path_name)
        axis.set_title(scenario)
        axis.set_xlabel("latency (ms)")
        axis.set_ylabel("percentile")
        axis.set_xscale("log")
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
