"""This tree's gateway against earlier commits' on the one measure that moves most, c=32 CPU per request,
in many short interleaved rounds: a difference of a few percent shows through this machine's noise where
`bench/run`'s three rounds of every path cannot show it.

    .venv/bin/python bench/compare.py --against REV [--against REV2 ...] [--compiled] [--rounds 8]
    .venv/bin/python bench/compare.py --tree LABEL=DIR [--compiled] [--connections 1]

`--tree` adds a gateway from a folder prepared by hand: an older commit compiled by the mypy of its day,
say, which the mypy installed now may refuse (D56). The folder holds `gateway/`, as a checkout does.

Each gateway serves the overhead benchmark's proxy path (two nginx `return 200` backends, 1 KiB POSTs
routed by the header, wrk at c=32), pinned alone on CPU 0 as in bench/run; every round runs each
gateway once, in turn. Medians, and every round's CPU per request so the spread is seen.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import overhead as o


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", metavar="REV", action="append", default=[], help="an earlier commit")
    parser.add_argument(
        "--tree", metavar="LABEL=DIR", action="append", default=[], help="a gateway from a prepared folder"
    )
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument("--seconds", type=float, default=3.0, help="each wrk run (default 3)")
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk's connections (default 32; 1: the added latency)"
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also this tree and each earlier commit with its request path compiled by mypyc (D24, D54)",
    )
    args = parser.parse_args()
    if not args.against and not args.tree:
        parser.error("name at least one --against or --tree to compare with")
    if not o.needs_nginx_and_wrk():
        return 2
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, o.REST_CPUS)
    work = Path(tempfile.mkdtemp(prefix="mce-compare-"))
    backends, document = o.small_backends(work)
    containers = document["Containers"]
    assert isinstance(containers, list)
    direct = str(containers[0]["Backend"]["Url"])
    stoppers: list[o.Nginx | o.Gateway] = [backends]
    samples: dict[str, list[o.Sample]] = {}
    try:
        gateways = {"this tree": o.Gateway(work, "this", document)}
        compiled = o.compile_gateway(work) if args.compiled else None
        if compiled is not None:
            gateways["this tree, compiled"] = o.Gateway(work, "compiled", document, source=compiled)
        for revision in args.against:
            (work / revision).mkdir()
            tree = o.checkout(work / revision, revision)
            gateways[revision] = o.Gateway(work, revision, document, source=tree)
            built = o.compile_gateway(work / revision, tree) if args.compiled else None
            if built is not None:
                gateways[f"{revision}, compiled"] = o.Gateway(work, f"{revision}-c", document, source=built)
        for spec in args.tree:
            label, _, folder = spec.partition("=")
            gateways[label] = o.Gateway(
                work, f"tree-{len(gateways)}", document, source=Path(folder).resolve()
            )
        stoppers += gateways.values()
        for gateway in gateways.values():
            o.wait_http(gateway.url + "/ping")
            o.run_wrk(gateway.url, o.INVOKE, 8, 1, 1024, ("alpha", "beta"))  # warm pools and caches
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            if args.connections == 1:  # the backend alone, for the latency each gateway adds
                samples.setdefault("direct", []).append(o.measure(direct, o.INVOKE, [], 1, args.seconds))
            order = list(gateways.items())  # every other round the other way: no gateway always goes first
            for label, gateway in order if round_ % 2 == 0 else reversed(order):
                pids = [gateway.proc.pid]
                sample = o.measure(gateway.url, o.INVOKE, pids, args.connections, args.seconds)
                samples.setdefault(label, []).append(sample)
    finally:
        for item in reversed(stoppers):
            item.stop()
        shutil.rmtree(work, ignore_errors=True)
    errors = sum(s.errors for group in samples.values() for s in group)
    print(report(samples, args))
    if errors:
        print(f"bench: {errors} requests failed", file=sys.stderr)
        return 1
    return 0


def report(samples: dict[str, list[o.Sample]], args: argparse.Namespace) -> str:
    base = statistics.median(s.cpu_us or 0.0 for s in samples["this tree"])
    command = "bench/compare.py " + " ".join(
        [*(f"--against {r}" for r in args.against), *(f"--tree {shlex.quote(t)}" for t in args.tree)]
    )
    command += " --compiled" if args.compiled else ""
    command += f" --connections {args.connections}" if args.connections != 32 else ""
    lines = [
        f"{args.rounds} rounds of {args.seconds:g} s, c={args.connections}, medians; "
        f"`.venv/bin/python {command}`",
        "",
        "| gateway | req/s | p50 (us) | CPU/request (us) | this tree / it | each round's CPU/request (us) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    direct = samples.pop("direct", None)
    if direct is not None:
        alone = statistics.median(s.p50_us for s in direct)
        lines.insert(1, f"The backend alone: p50 {alone:.0f} us; a gateway adds its p50 less that.")
    for label, group in samples.items():
        cpu = statistics.median(s.cpu_us or 0.0 for s in group)
        rps = statistics.median(s.rps for s in group)
        p50 = statistics.median(s.p50_us for s in group)
        rounds = json.dumps([round(s.cpu_us or 0.0, 1) for s in group])
        lines.append(f"| {label} | {rps:.0f} | {p50:.0f} | {cpu:.1f} | {base / cpu:.2f}x | {rounds} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
