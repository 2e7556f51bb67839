"""How the gateway's front door copes with hostile clients: idle, slow, oversized and greedy connections.

Each scenario starts a fresh gateway (`mce serve`) on 127.0.0.1 in front of the contract container
(tests/containers/contract_server.py), attacks it with raw sockets, and
reports Markdown rows: what the gateway did and the figure that shows it (seconds, counts, the gateway's
RSS from /proc/PID/status). The client timeouts are cut to 5 s (2 s with --quick, which also uses smaller
counts) so a run takes a minute or two. Output: the table on stdout, and DIR/hardening-<date>.md with --out.

    .venv/bin/python bench/hardening.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import selectors
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CONTRACT_SERVER, Proc, start_process  # noqa: E402 - from tests/, put on the path above

INVOKE = "/endpoints/shop/invocations"
MIB = 1024 * 1024
Row = tuple[str, str, str]  # scenario, what the gateway did, the figure


@dataclass(frozen=True)
class Sizes:
    timeout: float  # every client timeout of the gateway, seconds
    idle: int  # connections of each kind
    kept: int
    stalled: int
    slowloris: int
    cap: int  # --max-connections, and the connections opened against it
    over_cap: int
    normal: int  # requests of the client measured during the 64 MiB header
    pipelined: int  # requests pipelined by the client that reads nothing, for `stall` seconds
    stall: float
    connections: int  # each pipelining `bodies` bodies of 6 MiB
    bodies: int
    dead: int


FULL = Sizes(5, 1000, 100, 100, 200, 500, 600, 200, 3000, 5, 5, 8, 35)
QUICK = Sizes(2, 200, 30, 30, 50, 100, 120, 50, 1000, 3, 3, 4, 10)


def request(body: bytes = b"{}", *, close: bool = False, extra: str = "", length: int | None = None) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return (
        f"POST {INVOKE} HTTP/1.1\r\nHost: localhost\r\nX-Amzn-SageMaker-Target-Container-Hostname: alpha\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n{connection}{extra}\r\n"
    ).encode() + body


def padded(delay: float) -> bytes:
    """A body of just under 6 MiB (InvokeEndpoint's maximum) answered after `delay` seconds."""
    return json.dumps({"faults": {"alpha": {"delay": delay}}, "pad": "x" * (6 * MIB - 100)}).encode()


def statuses(raw: bytes) -> list[str]:
    """Each response in `raw` as 'STATUS ErrorType', read one at a time by its Content-Length."""
    found: list[str] = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
        if not match:
            return [*found, f"not HTTP: {raw[:40]!r}"]
        kind = re.search(rb"(?im)^x-amzn-ErrorType: (\S+)", head)
        found.append(f"{match.group(1).decode()} {kind.group(1).decode() if kind else ''}".strip())
        length = re.search(rb"(?im)^content-length: (\d+)", head)
        raw = rest[int(length.group(1)) :] if length else b""
    return found


def tally(raws: list[bytes]) -> str:
    """'408 RequestTimeout x100, no answer x2': every response of every connection, counted."""
    answers = [answer for raw in raws for answer in (statuses(raw) or ["no answer"])]
    return ", ".join(f"{answer} x{n}" for answer, n in Counter(answers).most_common())


def connect(port: int, timeout: float = 30.0, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    return sock


def reset_peak(proc: Proc) -> float:
    """Reset VmHWM to the current VmRSS (/proc/PID/clear_refs, Linux 4.0); return VmRSS."""
    Path(f"/proc/{proc.popen.pid}/clear_refs").write_text("5")
    return memory(proc)


def memory(proc: Proc, field: str = "VmRSS") -> float:
    """VmRSS, or VmHWM (the peak), of `proc` in MiB."""
    lines = Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) / 1024 for line in lines if line.startswith(field + ":"))


def settled_rss(proc: Proc, limit: float = 15.0) -> float:
    """VmRSS once it has not changed for a second (or after `limit` seconds)."""
    deadline, value, since = time.monotonic() + limit, memory(proc), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 1.0:
        time.sleep(0.1)
        if (current := memory(proc)) != value:
            value, since = current, time.monotonic()
    return value


@dataclass
class Closing:
    raw: list[bytes]  # what each connection received
    answered: dict[int, float]  # when each connection that received anything got its first byte (monotonic)
    closed: dict[int, float]  # when each that closed did
    still_open: int


def until_closed(
    socks: list[socket.socket], limit: float, each_second: Callable[[list[int]], None] | None = None
) -> Closing:
    """Read every socket until the gateway closes it (EOF or reset) or `limit` seconds pass; once a second,
    `each_second` is given the indices of the connections still open."""
    got: list[list[bytes]] = [[] for _ in socks]
    answered: dict[int, float] = {}
    closed: dict[int, float] = {}
    start = tick = time.monotonic()
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, index)
        while selector.get_map() and (now := time.monotonic()) < start + limit:
            if each_second is not None and now >= tick:
                each_second([key.data for key in selector.get_map().values()])
                tick += 1
            wake = min(tick, start + limit) if each_second is not None else start + limit
            for key, _ in selector.select(max(wake - now, 0)):
                try:
                    piece = socks[key.data].recv(65536)
                except OSError:
                    piece = b""
                got[key.data].append(piece)
                if piece:
                    answered.setdefault(key.data, time.monotonic())
                else:
                    closed[key.data] = time.monotonic()
                    selector.unregister(key.fileobj)
        still_open = len(selector.get_map())
    for sock in socks:
        sock.close()
    return Closing([b"".join(pieces) for pieces in got], answered, closed, still_open)


def send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the gateway cut the connection: the reading side reports it


@dataclass
class Exchange:
    raw: bytes = b""
    sent: int = 0  # bytes the gateway took before it closed
    began: float = 0.0  # time.perf_counter() when sending began, and ended
    ended: float = 0.0


def exchange(port: int, data: bytes, timeout: float = 60.0) -> Exchange:
    """Send `data` on a new connection (from a thread) while reading until the gateway closes it."""
    result = Exchange()

    def push() -> None:
        view, result.began = memoryview(data), time.perf_counter()
        try:
            while result.sent < len(view):
                result.sent += sock.send(view[result.sent : result.sent + MIB])
        except OSError:
            pass  # the gateway closed: `sent` says how far it got
        result.ended = time.perf_counter()

    with connect(port, timeout) as sock:
        sender = threading.Thread(target=push, daemon=True)
        sender.start()
        chunks = []
        try:
            while piece := sock.recv(MIB):
                chunks.append(piece)
        except OSError:
            pass
        sender.join(timeout)  # a gateway that answered early may still be draining what comes
        if sender.is_alive():
            sock.shutdown(socket.SHUT_RDWR)  # wakes a sender blocked on a full buffer
            sender.join(timeout)
    result.raw = b"".join(chunks)
    return result


class Bench:
    """The container and the gateways started (`started`, the container first)."""

    def __init__(self, sizes: Sizes, tmp: Path) -> None:
        self.sizes, self.tmp = sizes, tmp
        self.started: list[Proc] = []
        argv = [sys.executable, str(CONTRACT_SERVER), "--name", "alpha", "--port", "0"]
        self.container = self.start(argv)
        self.endpoint = tmp / "shop.yaml"  # JSON is YAML
        self.endpoint.write_text(
            json.dumps(
                {
                    "EndpointName": "shop",
                    "InferenceExecutionConfig": {"Mode": "Direct"},
                    "Containers": [
                        {
                            "ContainerHostname": "alpha",
                            "Image": "x",
                            "Backend": {"Protocol": "sagemaker", "Url": self.container.url},
                        }
                    ],
                }
            )
        )

    def start(self, argv: list[str], stderr: Path | None = None) -> Proc:
        proc = start_process(argv, stderr=stderr)
        self.started.append(proc)
        return proc

    def gateway(self, *extra: str, short: bool = True) -> Proc:
        """A gateway with every client timeout `sizes.timeout` (`short`) or left at its default."""
        flags = ("--header-timeout", "--body-timeout", "--keep-alive-timeout", "--send-timeout")
        timeouts = [part for flag in flags for part in (flag, f"{self.sizes.timeout:g}")] if short else []
        argv = [sys.executable, "-m", "gateway", "serve", str(self.endpoint), "--port", "0"]
        return self.start([*argv, *timeouts, *extra], stderr=self.tmp / f"gateway-{len(self.started)}.log")

    def posts(self) -> int:
        with urllib.request.urlopen(self.container.url + "/count", timeout=10) as response:
            return int(response.read())

    def stop_gateways(self) -> None:
        for proc in self.started[1:]:
            proc.kill()
        del self.started[1:]


def idle(bench: Bench) -> list[Row]:
    n, port = bench.sizes.idle, bench.gateway().port
    start = time.monotonic()
    seen = until_closed([connect(port) for _ in range(n)], bench.sizes.timeout * 3 + 10)
    last = max(seen.closed.values(), default=start) - start
    did = f"closed {len(seen.closed):,}, {len(seen.answered)} of them with an answer"
    return [
        (
            f"{n:,} idle connections, nothing sent",
            did,
            f"last EOF {last:.1f} s after the first open; {seen.still_open} still open",
        )
    ]


def after_sending(bench: Bench, what: str, data: bytes, n: int, since: str) -> Row:
    """`n` connections send `data`, then nothing: how long until closed, from the last byte sent or from
    each connection's answer (`since`)."""
    port = bench.gateway().port
    socks = [connect(port) for _ in range(n)]
    for sock in socks:
        sock.sendall(data)
    start = time.monotonic()
    seen = until_closed(socks, bench.sizes.timeout * 3 + 10)
    began = seen.answered if since == "its answer" else {}
    times = [at - began.get(i, start) for i, at in seen.closed.items()]
    spread = f"{min(times):.1f}-{max(times):.1f}" if times else "-"
    return (
        f"{n} {what}",
        f"answered {tally(seen.raw)}; closed {len(seen.closed)}",
        f"closed {spread} s after {since}; {seen.still_open} still open",
    )


def slowloris(bench: Bench) -> list[Row]:
    n, timeout, port = bench.sizes.slowloris, bench.sizes.timeout, bench.gateway().port
    head, sent, open_at_check = request(), [0] * n, list[int]()
    socks = [connect(port) for _ in range(n)]
    start = time.monotonic()

    def one_byte(still: list[int]) -> None:
        if time.monotonic() >= start + timeout + 3 and not open_at_check:
            open_at_check.append(len(still))
        for index in still:
            try:
                sent[index] += socks[index].send(head[sent[index] : sent[index] + 1])
            except OSError:
                pass  # cut off: the read side sees it

    seen = until_closed(socks, timeout * 3 + 10, one_byte)
    times = [closed - start for closed in seen.closed.values()]
    still = open_at_check[0] if open_at_check else seen.still_open
    return [
        (
            f"slowloris: {n} connections sending a head 1 byte/s",
            f"answered {tally(seen.raw)}; head bytes sent: median {statistics.median(sent):g}/{len(head)}",
            (
                f"{still} still open at header-timeout + 3 s; closed "
                f"{min(times, default=0):.1f}-{max(times, default=0):.1f} s after the first byte"
            ),
        )
    ]


def cap(bench: Bench) -> list[Row]:
    limit, n = bench.sizes.cap, bench.sizes.over_cap
    port = bench.gateway("--max-connections", str(limit)).port
    socks = [connect(port) for _ in range(n)]
    while_full = tally([exchange(port, request(close=True), 10).raw])
    seen = until_closed(socks, 1.0)  # the refused are answered at once; the others still owe a head
    refused = sum(1 for raw in seen.raw if statuses(raw)[:1] == ["503 ServiceUnavailable"])
    for attempt in range(1, 51):  # noqa: B007 - until the gateway has seen the closes; reported below
        after = tally([exchange(port, request(close=True), 10).raw])
        if after.startswith("200"):
            break
        time.sleep(0.05)
    return [
        (
            f"connection cap: {n} connections to --max-connections {limit}",
            (
                f"{refused} answered 503 ServiceUnavailable at once, {seen.still_open} held; "
                f"a normal request while full: {while_full}"
            ),
            f"once they closed, a normal request: {after} (attempt {attempt})",
        )
    ]


def header_limits(bench: Bench) -> list[Row]:
    port, rows = bench.gateway().port, []
    for what, data in (
        ("a 100 KB header", request(extra="X-Big: " + "a" * 100_000 + "\r\n")),
        ("100,000 headers", request(extra="".join(f"X-{i}: v\r\n" for i in range(100_000)))),
        ("an 8 MB URL", b"POST /" + b"a" * 8_000_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ):
        results = [exchange(port, data) for _ in range(5)]  # each sent in one go, on a new connection
        took = min(result.sent for result in results) / MIB
        rows.append(
            (
                f"{what}, 5 times",
                f"answered {tally([result.raw for result in results])}",
                f"it took at least {took:.1f} of {len(data) / MIB:.1f} MiB before closing",
            )
        )
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"X-Amzn-SageMaker-Target-Container-Hostname": "alpha", "Content-Type": "application/json"}

    def latencies() -> list[tuple[float, float]]:  # (began, ended) of each; ended inf if not a 200
        times = []
        for _ in range(bench.sizes.normal):
            begin = time.perf_counter()
            client.request("POST", INVOKE, body=b"{}", headers=headers)
            with client.getresponse() as response:
                ok = response.read() and response.status == 200
            times.append((begin, time.perf_counter() if ok else float("inf")))
        return times

    def ms(times: list[tuple[float, float]]) -> str:
        values = [ended - began for began, ended in times] or [float("nan")]
        return f"median {statistics.median(values) * 1e3:.2f} ms, max {max(values) * 1e3:.2f} ms"

    quiet = latencies()
    attack, outcome = f"POST {INVOKE} HTTP/1.1\r\nHost: localhost\r\nX-Big: ".encode() + b"a" * 64 * MIB, []
    attacker = threading.Thread(target=lambda: outcome.append(exchange(port, attack)), daemon=True)
    attacker.start()
    loud = latencies()
    attacker.join(120)
    client.close()
    pushed = outcome[0] if outcome else Exchange()
    during = [(b, e) for b, e in loud if b < pushed.ended and e > pushed.began]
    rows.append(
        (
            f"a 64 MiB header, while another client sends {bench.sizes.normal} requests one by one",
            (
                f"answered the attacker {tally([pushed.raw])}; drained {pushed.sent / MIB:.0f} MiB in "
                f"{pushed.ended - pushed.began:.2f} s, while {len(during)} normal requests ran"
            ),
            (
                f"normal client: {ms(during)} during the push, {ms(loud)} over all {len(loud)}; "
                f"{ms(quiet)} with no attack"
            ),
        )
    )
    return rows


def unread(bench: Bench, *, short: bool) -> Row:
    """Pipelined requests with 60,000-byte answers on a connection that reads nothing for a while."""
    n, stall = bench.sizes.pipelined, bench.sizes.timeout + 3 if short else bench.sizes.stall
    gateway = bench.gateway(short=short)
    body = json.dumps({"faults": {"alpha": {"size": 60_000}}}).encode()
    before, rss = bench.posts(), reset_peak(gateway)
    with connect(gateway.port, 30, rcvbuf=64 * 1024) as sock:
        data = request(body) * (n - 1) + request(body, close=True)
        threading.Thread(target=send_quietly, args=(sock, data), daemon=True).start()
        time.sleep(stall)  # the fault itself: a client that reads nothing for this long
        ran, growth = bench.posts() - before, memory(gateway, "VmHWM") - rss
        answers, tail, ended, marker = 0, b"", "EOF", b"HTTP/1.1 200 OK"
        try:
            while piece := sock.recv(MIB):
                window = tail + piece
                answers, tail = answers + window.count(marker), window[-(len(marker) - 1) :]
        except OSError as exc:
            ended = type(exc).__name__
    setting = f"--send-timeout {bench.sizes.timeout:g}" if short else "default --send-timeout 60"
    return (
        f"{n:,} pipelined requests, 60,000-byte answers, nothing read for {stall:g} s ({setting})",
        (
            f"{ran} reached the container during the stall; then {answers:,} of {n:,} answers arrived, "
            f"then {ended}; the container saw {bench.posts() - before:,} in all"
        ),
        f"RSS growth {growth:.1f} MiB (VmHWM after the stall - VmRSS before)",
    )


def pipelined_bodies(bench: Bench, *extra: str) -> Row:
    conns, bodies = bench.sizes.connections, bench.sizes.bodies
    gateway = bench.gateway(*extra)
    data = request(padded(0.5)) * (bodies - 1) + request(padded(0.5), close=True)
    rss = reset_peak(gateway)
    with ThreadPoolExecutor(conns) as pool:
        results = list(pool.map(lambda _: exchange(gateway.port, data, 120), range(conns)))
    budget = " ".join(extra) or "default --max-buffered-mib 256"
    return (
        f"{conns} connections each pipelining {bodies} bodies of 6 MiB to a 0.5 s container ({budget})",
        f"answered {tally([result.raw for result in results])}",
        f"peak RSS growth {memory(gateway, 'VmHWM') - rss:.0f} MiB",
    )


def dead(bench: Bench) -> list[Row]:
    n, gateway = bench.sizes.dead, bench.gateway()
    settled_rss(gateway)
    before = reset_peak(gateway)
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: exchange(gateway.port, request(padded(0.5), close=True)), range(n)))
    after = settled_rss(gateway)
    return [
        (
            f"dead connections: {n} at once, each a 6 MiB body, closed after the answer",
            f"answered {tally([result.raw for result in results])}; no collection forced",
            f"RSS before {before:.0f} MiB, peak {memory(gateway, 'VmHWM'):.0f} MiB, after {after:.0f} MiB",
        )
    ]


SCENARIOS: list[Callable[[Bench], list[Row]]] = [  # numbered as in the table
    idle,
    lambda bench: [
        after_sending(
            bench, "keep-alive connections idle after one request", request(), bench.sizes.kept, "its answer"
        )
    ],
    lambda bench: [
        after_sending(
            bench,
            "connections stalled mid-body (10 of 1,000 bytes sent)",
            request(b"x" * 10, length=1000),
            bench.sizes.stalled,
            "the last byte sent",
        )
    ],
    slowloris,
    cap,
    header_limits,
    lambda bench: [unread(bench, short=False), unread(bench, short=True)],
    lambda bench: [
        pipelined_bodies(bench, *extra)
        for extra in ([], ["--max-buffered-mib", "64"], ["--max-buffered-mib", "32"])
    ],
    dead,
]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s timeouts and smaller counts")
    parser.add_argument("--out", type=Path, help="also write the table to DIR/hardening-<date>.md")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    command = shlex.join(sys.orig_argv)
    print(f"$ {command}", flush=True)
    rows: list[tuple[str, str, str, str]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hardening-") as tmp:
        bench = Bench(sizes, Path(tmp))
        try:
            for number, scenario in enumerate(SCENARIOS, 1):
                try:
                    found = scenario(bench)
                except Exception as exc:
                    found = [(getattr(scenario, "__name__", "?"), f"failed: {exc!r}", "-")]
                finally:
                    bench.stop_gateways()
                for letter, row in zip("abcd" if len(found) > 1 else [""], found, strict=False):
                    rows.append((f"{number}{letter}", *row))
                print(f"  scenario {number}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        finally:
            for proc in bench.started:
                proc.kill()
    today = datetime.date.today().isoformat()
    report = "\n".join(
        [
            f"# Gateway hardening, {today}",
            "",
            f"`{command}`",
            "",
            (
                f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs. Gateways "
                "run "
                f"with --header-timeout, --body-timeout, --keep-alive-timeout and --send-timeout "
                f"{sizes.timeout:g} s unless a row says otherwise, a fresh one per scenario; the run took "
                f"{time.monotonic() - started:.0f} s."
            ),
            "",
            "| # | scenario | what the gateway did | figure |",
            "|---|---|---|---|",
            *(f"| {' | '.join(row)} |" for row in rows),
        ]
    )
    print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"hardening-{today}.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
