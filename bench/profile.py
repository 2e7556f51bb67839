"""Where a gateway's time goes at c=32: py-spy samples of one `mce serve` in front of two nginx `return 200`
backends, while wrk sends 1 KiB POSTs routed by the header (the overhead benchmark's proxy path), then the
functions that hold the most samples, by their own time and inclusive.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile.py [--against REV] [--seconds 10]

With `--against`, the same for commit REV's gateway, run after this one's: compare the two tables. Sampling
is `--nonblocking` at 250 Hz, so the shares are approximate; the CPU per request printed is measured from
/proc, not sampled.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import overhead as o

FRAME = re.compile(r"(.*?) \((.*?):(\d+)\)")


def profile(work: Path, source: Path, label: str, seconds: int) -> Path:
    backends, document = o.small_backends(work, f"backends-{label}")
    gateway = o.Gateway(work, label, document, source=source)
    samples = work / f"{label}.txt"
    try:
        o.wait_http(gateway.url + "/ping")  # answers 200 once both backends do (D9)
        path, targets = "/endpoints/bench/invocations", ("alpha", "beta")
        o.run_wrk(gateway.url, path, 32, 2, 1024, targets)  # warm up
        record = ["record", "--nonblocking", "-r", "250", "-d", str(seconds + 2), "-f", "raw"]
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                *record,
                "-o",
                str(samples),
                "-p",
                str(gateway.proc.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        before = o.cpu_seconds([gateway.proc.pid])
        result = o.run_wrk(gateway.url, path, 32, seconds, 1024, targets)
        spent = o.cpu_seconds([gateway.proc.pid]) - before
        spy.wait()
        requests = result["requests"]
        print(f"{label}: {requests / seconds:.0f} req/s, {spent / requests * 1e6:.1f} us CPU per request")
    finally:
        gateway.stop()
        backends.stop()
    return samples


def table(samples: Path, rows: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        names = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            names.append(f"{match.group(1)} ({Path(match.group(2)).name})" if match else frame)
        own[names[-1]] += int(count)
        for name in set(names):
            inclusive[name] += int(count)
    for title, counter in (("own time", own), ("inclusive", inclusive)):
        print(f"  {title} ({total} samples)")
        for name, count in counter.most_common(rows):
            print(f"    {100 * count / total:5.1f} %  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", metavar="REV", help="also profile commit REV's gateway")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        print("bench/profile.py needs wrk and nginx (bench/run installs them)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mce-profile-") as folder:
        work = Path(folder)
        work.chmod(0o755)
        runs = [("this-commit", o.ROOT)]
        if args.against:
            runs.append((args.against, o.checkout(work, args.against)))
        for label, source in runs:
            table(profile(work, source, label, args.seconds), args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
