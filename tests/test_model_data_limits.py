"""Model data within bounds, through an unmodified boto3 against `mce up`: a download that drips fails its
endpoint at the variant's ModelDataDownloadTimeoutInSeconds while another endpoint comes up meanwhile; an
archive that unpacks past the variant's VolumeSizeInGB fails its endpoint, nothing unpacked; a deleted
endpoint's model data is removed (its logs stay); a slow download says how far it is, on mce's console and
in the deployment's log."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import re
import ssl
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_artifact
from test_local_sagemaker import ROLE, LocalSageMaker, settled

GIB = 1024**3


class Drip(http.server.BaseHTTPRequestHandler):
    """Answers any GET with a 10 MB archive, one byte a second: each read gets a byte well within its
    timeout, and the whole never arrives."""

    stop: threading.Event

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10_000_000))
        self.end_headers()
        while not self.stop.wait(1.0):
            try:
                self.wfile.write(b"\x1f")
                self.wfile.flush()
            except OSError:
                return

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def https_server(
    tmp_path: Path, handler: type[http.server.BaseHTTPRequestHandler]
) -> Iterator[tuple[str, Path]]:
    """An https:// server answering with `handler` (a certificate made for 127.0.0.1): the archive's URL and
    the certificate's file (mce trusts it through SSL_CERT_FILE)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/model.tar.gz", cert
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dripping(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https:// server that drips, and its certificate's file."""
    stop = threading.Event()
    with https_server(tmp_path, type("Handler", (Drip,), {"stop": stop})) as served:
        yield served
        stop.set()


def endpoint(sm: Any, name: str, model: dict[str, Any], **variant: Any) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=model)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, **variant}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def test_a_dripping_download_fails_at_its_timeout_and_blocks_no_other_endpoint(
    tmp_path: Path, dripping: tuple[str, Path]
) -> None:
    url, cert = dripping
    with LocalSageMaker(tmp_path, None, {"SSL_CERT_FILE": str(cert)}) as local:
        sm = local.sagemaker()
        began = time.monotonic()
        endpoint(
            sm,
            "dripping",
            {"Image": "test/echo:1", "ModelDataUrl": url},
            ModelDataDownloadTimeoutInSeconds=60,
        )
        endpoint(sm, "ordinary", {"Image": "test/echo:1"})
        ordinary = settled(sm, "ordinary")
        up_after = time.monotonic() - began
        assert ordinary["EndpointStatus"] == "InService", ordinary.get("FailureReason")
        listed = {e["EndpointName"]: e["EndpointStatus"] for e in sm.list_endpoints()["Endpoints"]}
        assert listed["dripping"] == "Creating"  # still downloading, holding nothing the other needed
        failed = settled(sm, "dripping")
        failed_after = time.monotonic() - began
        assert failed["EndpointStatus"] == "Failed"
        assert "within 60 s" in failed["FailureReason"], failed["FailureReason"]
        assert "ModelDataDownloadTimeoutInSeconds" in failed["FailureReason"]
        print(
            f"[limits] the other endpoint InService after {up_after:.1f} s; "
            f"the dripping one Failed after {failed_after:.1f} s"
        )


class Zeros(io.RawIOBase):
    """`size` zero bytes, never held in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_an_archive_past_the_volume_size_fails_its_endpoint_with_nothing_unpacked(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        member = tarfile.TarInfo("weights.bin")
        member.size = GIB + GIB // 8  # 1.125 GiB of zeros: more than VolumeSizeInGB 1 (10^9 bytes)
        tar.addfile(member, Zeros(member.size))
    with LocalSageMaker(tmp_path) as local:
        sm = local.sagemaker()
        endpoint(sm, "bomb", {"Image": "test/echo:1", "ModelDataUrl": str(archive)}, VolumeSizeInGB=1)
        failed = settled(sm, "bomb")
        assert failed["EndpointStatus"] == "Failed"
        reason = failed["FailureReason"]
        assert "VolumeSizeInGB (1 GB)" in reason and str(member.size) in reason, reason
        unpacked = [p for p in local.state.rglob("weights.bin")]
        assert unpacked == [], unpacked


def test_a_deleted_endpoints_model_data_is_removed_and_its_logs_stay(tmp_path: Path) -> None:
    archive = write_artifact(tmp_path / "model.tar.gz", {"weights.json": "{}"})
    with LocalSageMaker(tmp_path) as local:
        sm = local.sagemaker()
        endpoint(sm, "kept", {"Image": "test/echo:1", "ModelDataUrl": str(archive)})
        assert settled(sm, "kept")["EndpointStatus"] == "InService"
        folder = local.state / "kept"
        assert [p.name for p in folder.rglob("weights.json")] == ["weights.json"]
        sm.delete_endpoint(EndpointName="kept")
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName="kept", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        # the container's log and the deployment's own (its steps: gateway.launch.deployment)
        assert left == ["kept/AllTraffic/container-1.log", "kept/AllTraffic/deployment.log"], left


class Trickle(http.server.BaseHTTPRequestHandler):
    """Answers any GET with `archive`, 256 KiB every 0.15 s: a download that takes a few seconds."""

    archive: bytes

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.archive)))
        self.end_headers()
        for start in range(0, len(self.archive), 256 * 1024):
            self.wfile.write(self.archive[start : start + 256 * 1024])
            self.wfile.flush()
            time.sleep(0.15)  # the server's pace, not the test's synchronisation

    def log_message(self, *args: Any) -> None:
        pass


def test_a_slow_download_says_how_far_it_is_on_the_console_and_in_the_deployment_log(tmp_path: Path) -> None:
    archive = write_artifact(tmp_path / "model.tar.gz", {"weights.bin": os.urandom(3_000_000)}).read_bytes()
    handler = type("Handler", (Trickle,), {"archive": archive})
    with (
        https_server(tmp_path, handler) as (url, cert),
        LocalSageMaker(tmp_path, None, {"SSL_CERT_FILE": str(cert)}) as local,
    ):
        sm = local.sagemaker()
        endpoint(sm, "trickle", {"Image": "test/echo:1", "ModelDataUrl": url})
        assert settled(sm, "trickle")["EndpointStatus"] == "InService"
        log = (local.state / "trickle" / "trickle" / "AllTraffic" / "deployment.log").read_text()
        console = []
        while not local.proc.lines.empty():
            console.append(local.proc.lines.get())
    total = f"{len(archive) / 1e6:.1f} MB"
    steps = [
        rf"container-1: downloading ModelDataUrl {url}: \d+\.\d MB of {total} \(\d+\.\d MB/s\)",
        rf"container-1: downloaded ModelDataUrl {url}: {total} in \d+\.\d s \(\d+\.\d MB/s\)",
        r"container-1: unpacking ModelDataUrl model\.tar\.gz \(\d+\.\d MB\) into ",
        r"container-1: unpacked ModelDataUrl model\.tar\.gz: 1 files, 3\.0 MB in \d+\.\d s",
    ]
    for step in steps:
        assert re.search(step, log), (step, log)
        assert any(re.search("mce: trickle/AllTraffic: " + step, line) for line in console), (step, console)
    assert re.search(r"starting container-1\n.*every container healthy in \d+\.\d s", log), log
