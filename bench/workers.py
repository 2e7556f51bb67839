"""More than one core: `mce serve --workers 2` against nginx with 2 workers, and each with one, in one run.

The overhead benchmark's proxy path (1 KiB POSTs routed by X-Amzn-SageMaker-Target-Container-Hostname to two
nginx `return 200` backends, wrk, rounds interleaved, medians), at c=64, with nothing pinned: on a machine
with two cores the proxies, wrk and the backends share them, as they would on a host that runs all of it.
CPU per request is every proxy process's (nginx's workers; the gateway's supervisor and workers).

    bench/run is the harness that installs nginx and wrk; then
    .venv/bin/python bench/workers.py [--seconds 5] [--rounds 3] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import overhead as o

CONNECTIONS = 64
PATH = "/endpoints/bench/invocations"


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def started(supervisor: int, count: int, timeout: float = 60.0) -> list[int]:
    """The supervisor's `count` workers, once it has started them all (it starts them one by one)."""
    deadline = time.monotonic() + timeout
    while len(found := children(supervisor)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"mce serve --workers {count} started {len(found)} workers")
        time.sleep(0.05)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=o.HERE / "results")
    args = parser.parse_args()
    stoppers: list[o.Nginx | o.Gateway] = []
    results: dict[str, list[o.Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="mce-workers-bench-") as folder:
        work = Path(folder)
        work.chmod(0o755)
        try:
            small = [o.free_port() for _ in range(2)]
            servers = [
                f"  server {{ listen 127.0.0.1:{p}; location / {{ return 200 '{o.SMALL_ANSWER}'; }} }}"
                for p in small
            ]
            stoppers.append(o.Nginx(work, "backends", "\n".join(servers)))
            names = dict(zip(("alpha", "beta"), small, strict=True))
            paths: dict[str, tuple[str, list[int]]] = {}
            for workers in (1, 2):
                port = o.free_port()
                nginx = o.Nginx(
                    work, f"nginx-{workers}", o.nginx_router(port, names), cpu=None, workers=workers
                )
                stoppers.append(nginx)
                document = o.direct_document(names)
                gateway = o.Gateway(work, f"gateway-{workers}", document, "--workers", str(workers), cpu=None)
                stoppers.append(gateway)
                o.wait_http(f"http://127.0.0.1:{port}/ping")
                o.wait_http(gateway.url + "/ping")
                paths[f"nginx, {workers} worker(s)"] = (f"http://127.0.0.1:{port}", nginx.worker_pids())
                pids = [gateway.proc.pid, *(started(gateway.proc.pid, workers) if workers > 1 else [])]
                paths[f"gateway, --workers {workers}"] = (gateway.url, pids)
            for url, _ in paths.values():
                o.run_wrk(url, PATH, CONNECTIONS, 1, 1024, ("alpha", "beta"))  # warm up
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
                for name, (url, pids) in paths.items():
                    sample = o.measure(url, PATH, pids, CONNECTIONS, args.seconds)
                    results.setdefault(name, []).append(sample)
                    print(
                        f"  {name:<22} {sample.rps:8.0f} req/s  cpu/req {sample.cpu_us:5.1f} us",
                        file=sys.stderr,
                    )
        finally:
            for stopper in reversed(stoppers):
                stopper.stop()
    lines = [
        f"# More than one core: {datetime.date.today().isoformat()}",
        "",
        f"`.venv/bin/python bench/workers.py --seconds {args.seconds:g} --rounds {args.rounds}`: "
        f"c={CONNECTIONS}, 1 KiB POSTs, nothing pinned (two cores shared by the proxy, wrk and the "
        "backends), medians.",
        "",
        "| proxy | req/s | CPU per request (us) | errors |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, samples in results.items():
        rps = statistics.median(s.rps for s in samples)
        cpu = statistics.median(s.cpu_us for s in samples if s.cpu_us is not None)
        lines.append(f"| {name} | {rps:.0f} | {cpu:.1f} | {sum(s.errors for s in samples)} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"workers-{datetime.date.today().isoformat()}.md").write_text(text)
    print(text)
    return 1 if any(s.errors for samples in results.values() for s in samples) else 0


if __name__ == "__main__":
    sys.exit(main())
