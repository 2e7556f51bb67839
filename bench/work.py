"""How much work one routed request costs a gateway, counted rather than timed: Python function calls,
bytecodes executed and system calls per request, for this tree and for earlier commits, with the functions
that account for the difference.

Timing a proxy on a shared 2-core VM moves 10-30% between runs (bench/results: nginx alone ranged 34k-47k
req/s in one day), so a change of a few percent cannot be told from noise by `bench/run` alone. These
counts do not move between runs: they say what a change added to or took from the request path, and
bench/run (or bench/profile.py) says what that costs in time.

    .venv/bin/python bench/work.py [--against REV ...] [--list] [--seconds 2]
    .venv/bin/python bench/work.py --instructions [--compiled] [--against REV ...]

Each gateway serves the overhead benchmark's proxy path (two nginx `return 200` backends, 1 KiB POSTs
routed by the header, wrk at c=32). Calls and bytecodes come from a tracing hook switched on for the
measured window only (the gateway runs far slower while traced; the counts are exact all the same);
system calls from `strace -c` on an untraced run, when strace is installed.

Bytecodes say nothing of a build compiled by mypyc (D24, D54). `--instructions` counts instead the
machine instructions the gateway runs in user space per request (the interpreter, the compiled modules,
uvloop and httptools alike), with valgrind's callgrind switched on for the measured window only: about 1%
apart between runs of one build, whatever else the machine does. `--compiled` adds each tree compiled.
The kernel's share (the system calls) is not in it; bench/run and bench/compare.py time the whole.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import overhead as o

# Run as the gateway: a tracing hook counts calls and bytecodes per function while SIGUSR1 .. SIGUSR2.
TRACED = """
import collections, json, os, signal, sys
calls, codes, on = collections.Counter(), collections.Counter(), [False]
def tracer(frame, event, arg):
    if not on[0]:
        return None
    code = frame.f_code
    key = os.path.basename(code.co_filename) + ":" + code.co_qualname
    calls[key] += 1
    frame.f_trace_opcodes, frame.f_trace_lines = True, False
    def local(frame, event, arg):
        if event == "opcode":
            codes[key] += 1
        return local
    return local
def start(*_):
    calls.clear(); codes.clear(); on[0] = True
def stop(*_):
    on[0] = False
    with open(os.environ["MCE_WORK_OUT"], "w") as out:
        json.dump({"calls": calls, "codes": codes}, out)
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
sys.settrace(tracer)
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def source_of(work: Path, revision: str | None) -> Path:
    if revision is None:
        return o.ROOT
    (work / revision).mkdir()
    return o.checkout(work / revision, revision)


def serve(
    work: Path, source: Path, document: Path, *, traced: bool, out: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = o.free_port()
    command = ["-c", TRACED] if traced else ["-m", "gateway"]
    proc = subprocess.Popen(
        [sys.executable, *command, "serve", str(document), "--port", str(port), "--log-level", "warning"],
        cwd=source,
        env={**os.environ, "MCE_WORK_OUT": str(out), "PYTHONPATH": str(source)},
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    o.wait_http(url + "/ping")
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def traced_counts(work: Path, source: Path, document: Path, seconds: float) -> dict[str, dict[str, float]]:
    out = work / "counts.json"
    out.unlink(missing_ok=True)
    proc, url = serve(work, source, document, traced=True, out=out)
    try:
        o.run_wrk(url, o.INVOKE, 8, 1, 1024, ("alpha", "beta"))  # warm pools and caches, untraced
        proc.send_signal(signal.SIGUSR1)
        requests = o.run_wrk(url, o.INVOKE, 32, seconds, 1024, ("alpha", "beta"))["requests"]
        proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not out.exists() or not out.read_text().endswith("}"):
            if time.monotonic() > deadline:
                raise RuntimeError("the traced gateway wrote no counts")
            time.sleep(0.05)  # a file another process writes: nothing to wait on but the file
        counts = json.loads(out.read_text())
    finally:
        stop(proc)
    return {kind: {k: v / requests for k, v in table.items()} for kind, table in counts.items()}


def syscalls(work: Path, source: Path, document: Path, seconds: float) -> dict[str, float] | None:
    if shutil.which("strace") is None:
        return None
    proc, url = serve(work, source, document, traced=False, out=work / "unused")
    summary = work / "strace.txt"
    try:
        o.run_wrk(url, o.INVOKE, 8, 1, 1024, ("alpha", "beta"))
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", str(summary), "-p", str(proc.pid)], stderr=subprocess.PIPE
        )
        assert tracer.stderr is not None
        tracer.stderr.readline()  # "strace: Process N attached": counting from here
        requests = o.run_wrk(url, o.INVOKE, 32, seconds, 1024, ("alpha", "beta"))["requests"]
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    finally:
        stop(proc)
    counts: dict[str, float] = {}
    for line in summary.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3]) / requests
    return counts


def instructions(work: Path, source: Path, document: Path, seconds: float) -> float:
    """User-space instructions per request of the gateway in `source`, under callgrind."""
    port, out = o.free_port(), work / f"callgrind-{time.monotonic_ns()}.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    gateway = ["-m", "gateway", "serve", str(document), "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(
        [*valgrind, sys.executable, *gateway],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        o.wait_http(url + "/ping", timeout=300)  # some 50 times slower under valgrind
        o.run_wrk(url, o.INVOKE, 8, 3, 1024, ("alpha", "beta"))  # warm pools and caches, uncounted
        subprocess.run(["callgrind_control", "--instr=on", str(proc.pid)], check=True, capture_output=True)
        requests = o.run_wrk(url, o.INVOKE, 32, seconds, 1024, ("alpha", "beta"))["requests"]
        subprocess.run(["callgrind_control", "--instr=off", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(timeout=120)  # callgrind writes its totals as the gateway exits
    totals = [
        int(line.split()[1])
        for path in work.glob(out.name + "*")
        for line in path.read_text().splitlines()
        if line.startswith(("summary:", "totals:"))
    ]
    if not totals or not requests:
        raise RuntimeError("callgrind counted nothing")
    return max(totals) / requests


def count_instructions(args: argparse.Namespace, work: Path, document: Path) -> str:
    trees: dict[str, Path] = {"this tree": o.ROOT}
    for revision in args.against:
        (work / revision).mkdir()
        trees[revision] = o.checkout(work / revision, revision)
    if args.compiled:
        for label, tree in list(trees.items()):
            built = o.compile_gateway(work / (label.replace(" ", "-") + "-build"), tree)
            if built is not None:
                trees[f"{label}, compiled"] = built
    lines = [
        "| gateway | user-space instructions per request |",
        "| --- | ---: |",
    ]
    for label, tree in trees.items():
        print(f"bench: counting instructions of {label}", file=sys.stderr)
        lines.append(f"| {label} | {instructions(work, tree, document, args.seconds * 2) / 1000:.1f}k |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", metavar="REV", action="append", default=[], help="an earlier commit")
    parser.add_argument("--seconds", type=float, default=2.0, help="the counted window (default 2)")
    parser.add_argument("--top", type=int, default=15, help="functions shown by difference (default 15)")
    parser.add_argument(
        "--list", action="store_true", help="every function of this tree: calls and bytecodes per request"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="user-space instructions per request (valgrind)"
    )
    parser.add_argument("--compiled", action="store_true", help="with --instructions: each tree compiled too")
    args = parser.parse_args()
    if not o.needs_nginx_and_wrk():
        return 2
    work = Path(tempfile.mkdtemp(prefix="mce-work-"))
    backends, endpoint = o.small_backends(work)
    document = work / "bench.json"
    document.write_text(json.dumps(endpoint))
    results: dict[str, tuple[dict[str, dict[str, float]], dict[str, float] | None]] = {}
    if args.instructions:
        if shutil.which("valgrind") is None:
            print("bench: --instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
            return 2
        try:
            print(count_instructions(args, work, document))
        finally:
            backends.stop()
            shutil.rmtree(work, ignore_errors=True)
        return 0
    try:
        for revision in (None, *args.against):
            label = revision or "this tree"
            source = source_of(work, revision)
            print(f"bench: counting {label}", file=sys.stderr)
            results[label] = (
                traced_counts(work, source, document, args.seconds),
                syscalls(work, source, document, args.seconds),
            )
    finally:
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(report(results, args.top))
    if args.list:
        print(listing(results["this tree"][0]))
    return 0


def listing(counts: dict[str, dict[str, float]]) -> str:
    """Every function this tree ran at least once in ten requests, by bytecodes per request."""
    lines = ["\n| function | calls per request | bytecodes per request |", "| --- | ---: | ---: |"]
    calls, codes = counts["calls"], counts["codes"]
    for key in sorted(codes, key=lambda k: -codes[k]):
        if calls.get(key, 0) >= 0.1:
            lines.append(f"| {key} | {calls.get(key, 0):.1f} | {codes[key]:.1f} |")
    return "\n".join(lines)


def report(results: dict[str, tuple[dict[str, dict[str, float]], dict[str, float] | None]], top: int) -> str:
    labels = list(results)
    lines = ["| per request | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    rows = {
        "Python calls": [sum(counts["calls"].values()) for counts, _ in results.values()],
        "bytecodes": [sum(counts["codes"].values()) for counts, _ in results.values()],
        "system calls": [sum(calls.values()) if calls else float("nan") for _, calls in results.values()],
    }
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    for label, (_, calls) in results.items():
        if calls:
            shown = ", ".join(
                f"{name} {n:.2f}" for name, n in sorted(calls.items(), key=lambda kv: -kv[1]) if n >= 0.05
            )
            lines.append(f"\nsystem calls per request, {label}: {shown}")
    if len(labels) > 1:
        this, *others = labels
        for other in others:
            mine, theirs = results[this][0]["codes"], results[other][0]["codes"]
            delta = collections.Counter({k: mine.get(k, 0) - theirs.get(k, 0) for k in {*mine, *theirs}})
            lines.append(
                f"\nbytecodes per request by function, {this} against {other} (largest differences):"
            )
            for key, value in sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:top]:
                lines.append(f"  {value:+8.1f}  {key}  ({theirs.get(key, 0):.1f} -> {mine.get(key, 0):.1f})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
