"""What mce's bidirectional-stream relay costs: one message's round trip, and a stream of messages, through
`mce up --http2-port` (HTTP/2 over TLS in, a WebSocket to the container out) against the same container
(examples/containers/bidi_echo.py) called directly over its WebSocket. The client is h2 on asyncio over
TLS, sending PayloadPart events unsigned (mce does not check event signatures), one stream per
measurement; the container is the same script in both cases.

    round trip   a 64-byte UTF8 part and its echo, one at a time, --messages times: p50 and p99
    stream       `many N`: N answers of 1 KiB from the container, as fast as both sides take them

    .venv/bin/python bench/bidi.py [--messages 2000] [--stream 20000] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import websockets
from overhead import ROOT, free_port, provenance, publish

from gateway import eventstream

HERE = Path(__file__).resolve().parent
CONTAINER = ROOT / "examples" / "containers" / "bidi_echo.py"
_ANNOUNCED = re.compile(
    r"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2=https://localhost:(\d+) SSL_CERT_FILE=(\S+)"
)


def part(text: str) -> bytes:
    return eventstream.message(
        eventstream.headers((":event-type", "PayloadPart"), (":message-type", "event"), ("DataType", "UTF8")),
        text.encode(),
    )


class Stream:
    """One InvokeEndpointWithBidirectionalStream over h2, unsigned."""

    def __init__(self, port: int, cert: str, endpoint: str) -> None:
        self.port, self.cert, self.endpoint = port, cert, endpoint
        self.events: asyncio.Queue[bytes] = asyncio.Queue()
        self.decoder = eventstream.Decoder()

    async def open(self) -> None:
        context = ssl.create_default_context(cafile=self.cert)
        context.set_alpn_protocols(["h2"])
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=context, server_hostname="localhost"
        )
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
        self.conn.increment_flow_control_window(1 << 24)
        self.conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", f"localhost:{self.port}"),
                (":path", f"/endpoints/{self.endpoint}/invocations-bidirectional-stream"),
                ("content-type", "application/vnd.amazon.eventstream"),
            ],
        )
        self.writer.write(self.conn.data_to_send())
        self.pump = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while data := await self.reader.read(1 << 16):
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    for _, payload in self.decoder.feed(event.data):
                        self.events.put_nowait(payload)
            self.writer.write(self.conn.data_to_send())

    def send(self, text: str) -> None:
        self.conn.send_data(1, part(text))
        self.writer.write(self.conn.data_to_send())

    async def close(self) -> None:
        self.pump.cancel()
        self.writer.close()


async def round_trips_mce(port: int, cert: str, count: int) -> list[float]:
    stream = Stream(port, cert, "bench")
    await stream.open()
    times = []
    for i in range(count):
        began = time.perf_counter()
        stream.send(f"{i:064d}")
        await stream.events.get()
        times.append(time.perf_counter() - began)
    stream.send("close")
    await stream.close()
    return times


async def round_trips_direct(port: int, count: int) -> list[float]:
    times = []
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/invocations-bidirectional-stream", compression=None
    ) as ws:
        for i in range(count):
            began = time.perf_counter()
            await ws.send(f"{i:064d}")
            await ws.recv()
            times.append(time.perf_counter() - began)
    return times


async def stream_mce(port: int, cert: str, count: int) -> float:
    stream = Stream(port, cert, "bench")
    await stream.open()
    began = time.perf_counter()
    stream.send(f"many {count}")
    for _ in range(count):
        await stream.events.get()
    took = time.perf_counter() - began
    stream.send("close")
    await stream.close()
    return took


async def stream_direct(port: int, count: int) -> float:
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/invocations-bidirectional-stream", compression=None, max_queue=None
    ) as ws:
        began = time.perf_counter()
        await ws.send(f"many {count}")
        for _ in range(count):
            await ws.recv()
        return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--stream", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mce-bidi-bench-"))
    images = work / "images.yaml"
    images.write_text(
        json.dumps(
            {
                "Images": [
                    {"Image": "bench/bidi:*", "Backend": {"Launch": {"Command": ["python", str(CONTAINER)]}}}
                ]
            }
        )
    )
    direct_port = free_port()
    direct = subprocess.Popen(
        [sys.executable, str(CONTAINER)],
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(direct_port)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert direct.stdout is not None
    direct.stdout.readline()  # listening
    argv = [sys.executable, "-m", "gateway", "up", "--port", "0", "--http2-port", "0", "--no-metrics"]
    argv += ["--state", str(work / "state"), "--images", str(images), "--log-level", "warning"]
    mce = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert mce.stdout is not None
        url = port = cert = None
        for line in mce.stdout:
            found = re.search(r"listening on (http://\S+)", line)
            if found and url is None:
                url = found.group(1)
            announced = _ANNOUNCED.search(line)
            if announced:
                port, cert = int(announced.group(1)), announced.group(2)
                break
        assert url is not None and port is not None and cert is not None, "mce up did not start"
        import boto3

        sm = boto3.client(
            "sagemaker",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="b",
            aws_secret_access_key="b",
        )
        sm.create_model(
            ModelName="bench",
            ExecutionRoleArn="arn:aws:iam::000000000000:role/b",
            PrimaryContainer={"Image": "bench/bidi:1"},
        )
        sm.create_endpoint_config(
            EndpointConfigName="bench",
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "bench"}],
        )
        sm.create_endpoint(EndpointName="bench", EndpointConfigName="bench")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="bench", WaiterConfig={"Delay": 1})
        results = {}
        for name, trips, stream in (
            (
                "direct to the container",
                lambda: round_trips_direct(direct_port, args.messages),
                lambda: stream_direct(direct_port, args.stream),
            ),
            (
                "through mce",
                lambda: round_trips_mce(port, cert, args.messages),
                lambda: stream_mce(port, cert, args.stream),
            ),
        ):
            times = asyncio.run(trips())
            took = asyncio.run(stream())
            results[name] = (
                statistics.median(times),
                sorted(times)[int(len(times) * 0.99)],
                args.stream / took,
            )
            p50, p99, rate = results[name]
            print(
                f"  {name}: p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us, {rate:.0f} msg/s", file=sys.stderr
            )
    finally:
        mce.terminate()
        mce.wait(timeout=60)
        direct.terminate()
        direct.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# Bidirectional streams: the relay's cost",
        "",
        *provenance(f".venv/bin/python bench/bidi.py --messages {args.messages} --stream {args.stream}"),
        "",
        "| path | round trip p50 (us) | round trip p99 (us) | 1 KiB messages streamed per second |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {name} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} | {rate:.0f} |"
            for name, (p50, p99, rate) in results.items()
        ),
        "",
        "A round trip is one 64-byte part sent and its echo received, one at a time; the stream is the",
        "container answering one request with that many 1 KiB messages.",
    ]
    publish(lines, args.out, "bidi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
