"""What the gateway costs: latency added and throughput, against direct calls and nginx, in one run.

Everything runs on 127.0.0.1 on ports the OS chose: two fixed-response backends (one nginx, `return 200`),
the gateway in Direct mode in front of them, and nginx routing on the same header with a `map` and
keep-alive upstream pools (one worker, like the one gateway process). wrk drives each in turn (POST,
~1 KiB JSON body, the routing header alternating between the two backends), rounds interleaved, medians
reported. CPU per request is the proxy process's utime+stime from /proc over the run, divided by the
requests served.

    bench/run [--seconds 10] [--rounds 3] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
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
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PATH = "/endpoints/bench/invocations"


@dataclass
class Sample:
    rps: float
    p50_us: float
    p99_us: float
    cpu_us_per_request: float | None
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.05)


class Nginx:
    """One nginx (master + 1 worker) with the given `http {}` body; its worker is the measured process."""

    def __init__(self, work: Path, name: str, http_body: str) -> None:
        self.dir = work / name
        self.dir.mkdir()
        conf = self.dir / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
  keepalive_requests 1000000;
  client_max_body_size 8m;
{http_body}
}}
"""
        )
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(self.dir)], stderr=subprocess.DEVNULL)

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def run_wrk(url: str, connections: int, seconds: float, body_bytes: int = 1024) -> dict[str, float]:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "-s", str(HERE / "wrk.lua"), url, "--", PATH, "alpha", "beta", str(body_bytes)],
        check=True, capture_output=True, text=True,
    ).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    result: dict[str, float] = json.loads(line)
    return result


def measure(url: str, pids: list[int] | None, connections: int, seconds: float) -> Sample:
    before = cpu_seconds(pids) if pids else 0.0
    result = run_wrk(url, connections, seconds)
    after = cpu_seconds(pids) if pids else 0.0
    requests = result["requests"]
    return Sample(
        rps=requests / (result["duration_us"] / 1e6),
        p50_us=result["p50_us"],
        p99_us=result["p99_us"],
        cpu_us_per_request=(after - before) * 1e6 / requests if pids and requests else None,
        errors=int(result["socket_errors"] + result["non_2xx"]),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the markdown table goes")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing; bench/run installs it", file=sys.stderr)
            return 2

    work = Path(tempfile.mkdtemp(prefix="mce-bench-"))
    backend_ports = [free_port(), free_port()]
    proxy_port = free_port()
    backends = Nginx(
        work, "backends",
        "\n".join(
            f"  server {{ listen 127.0.0.1:{port}; location / {{ return 200 '{{\"predictions\": [[0.1, 0.9]]}}'; }} }}"
            for port in backend_ports
        ),
    )
    proxy = Nginx(
        work, "proxy",
        f"""
  map $http_x_amzn_sagemaker_target_container_hostname $container {{ alpha alpha; beta beta; }}
  upstream alpha {{ server 127.0.0.1:{backend_ports[0]}; keepalive 64; keepalive_requests 1000000; }}
  upstream beta {{ server 127.0.0.1:{backend_ports[1]}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{proxy_port};
    location = /ping {{ return 200; }}
    location / {{
      proxy_pass http://$container/invocations;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}""",
    )
    endpoint = work / "bench.yaml"
    endpoint.write_text(
        json.dumps(
            {
                "EndpointName": "bench",
                "InferenceExecutionConfig": {"Mode": "Direct"},
                "Containers": [
                    {"ContainerHostname": name, "Backend": {"Protocol": "sagemaker", "Url": f"http://127.0.0.1:{port}"}}
                    for name, port in zip(("alpha", "beta"), backend_ports)
                ],
            }
        )
    )
    gateway_port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", str(endpoint), "--port", str(gateway_port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, cwd=ROOT,
    )
    try:
        for port in (*backend_ports, proxy_port, gateway_port):
            wait_http(f"http://127.0.0.1:{port}/ping")
        targets = {
            "direct": (f"http://127.0.0.1:{backend_ports[0]}", None),
            "nginx": (f"http://127.0.0.1:{proxy_port}", proxy.worker_pids()),
            "gateway": (f"http://127.0.0.1:{gateway_port}", [gateway.pid]),
        }
        for url, _ in targets.values():  # warm up pools and caches
            run_wrk(url, 8, 1.0)
        samples: dict[tuple[str, int], list[Sample]] = {}
        for round_ in range(args.rounds):
            for connections in (1, 32):
                for name, (url, pids) in targets.items():
                    sample = measure(url, pids, connections, args.seconds)
                    samples.setdefault((name, connections), []).append(sample)
                    print(f"round {round_ + 1} c={connections:<2} {name:<8} {sample.rps:8.0f} req/s  "
                          f"p50 {sample.p50_us:6.0f} us  p99 {sample.p99_us:6.0f} us  "
                          f"cpu/req {sample.cpu_us_per_request or 0:5.1f} us  errors {sample.errors}", file=sys.stderr)
        table = report(samples, args)
        print(table)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
        (args.out / f"overhead-{stamp}.md").write_text(table)
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        proxy.stop()
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(samples: dict[tuple[str, int], list[Sample]], args: argparse.Namespace) -> str:
    def med(name: str, c: int, field: str) -> float:
        values = [getattr(s, field) for s in samples[(name, c)]]
        return statistics.median(v for v in values if v is not None) if any(v is not None for v in values) else float("nan")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr.strip()
    options = f" --seconds {args.seconds:g} --rounds {args.rounds}" if (args.seconds, args.rounds) != (10.0, 3) else ""
    lines = [
        "# Gateway overhead",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; commit {commit.stdout.strip() or 'unknown'}",
        (f"- machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
         f"Python {platform.python_version()}, {nginx}"),
        (f"- {args.rounds} interleaved rounds of {args.seconds:g} s per cell, medians; POST ~1 KiB JSON, "
         "routing header alternating between two nginx `return 200` backends"),
        f"- reproduce: `bench/run{options}`",
        "",
        "| path | c=1 p50 (us) | c=1 p99 (us) | added p50 (us) | c=32 req/s | c=32 p50 (us) | c=32 p99 (us) | CPU/req (us) | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = med("direct", 1, "p50_us")
    for name in ("direct", "nginx", "gateway"):
        cpu = med(name, 32, "cpu_us_per_request")
        errors = sum(s.errors for key, group in samples.items() if key[0] == name for s in group)
        added = "-" if name == "direct" else f"{med(name, 1, 'p50_us') - base:.0f}"
        cpu_text = "-" if math.isnan(cpu) else f"{cpu:.0f}"
        lines.append(
            f"| {name} | {med(name, 1, 'p50_us'):.0f} | {med(name, 1, 'p99_us'):.0f} | {added} | "
            f"{med(name, 32, 'rps'):.0f} | {med(name, 32, 'p50_us'):.0f} | {med(name, 32, 'p99_us'):.0f} | "
            f"{cpu_text} | {errors} |"
        )
    ratio = med("gateway", 32, "rps") / med("nginx", 32, "rps")
    lines += ["", f"Gateway throughput at c=32: {ratio:.2f}x nginx's.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
