"""`mce serve --workers N` (gateway/workers.py): N gateway processes on one port, real contract containers,
boto3 as the client. The kernel spreads connections over the workers; GET /metrics on any of them is the
sum over all; SIGTERM stops every worker cleanly; a worker that dies stops the rest; what cannot be served
by several workers is refused."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from conftest import (
    Processes,
    container_doc,
    endpoint_doc,
    multi_model_doc,
    runtime_client,
    scrape,
    wait_until,
)

INVOCATIONS = ("sagemaker_invocations_total", "")  # scrape()'s key: (name, container label)
ENDPOINT_INVOCATIONS = 'sagemaker_invocations_total{container=""'  # the endpoint's line of an exposition


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def own_metrics(folder: Path) -> list[float]:
    """Each worker's own invocation count, read from its private socket as a sibling reads it."""
    counts = []
    for path in sorted(folder.glob("mce-workers-*/worker-*.sock")):
        exposition = b""
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(path))
            while piece := connection.recv(65536):
                exposition += piece
        endpoint = [
            line for line in exposition.decode().splitlines() if line.startswith(ENDPOINT_INVOCATIONS)
        ]
        counts.append(float(endpoint[0].rsplit(" ", 1)[1]) if endpoint else 0.0)
    return counts


def test_two_workers_share_the_port_and_metrics_add_up_across_them(procs: Processes, tmp_path: Path) -> None:
    workers_tmp = tmp_path / "tmp"
    workers_tmp.mkdir()
    doc = endpoint_doc("Direct", [container_doc("alpha", procs.container("alpha").url)])
    gateway = procs.gateway(doc, "--workers", "2", env={"TMPDIR": str(workers_tmp)})
    pids = children(gateway.popen.pid)
    assert len(pids) == 2, pids
    sent = 40
    for _ in range(sent):  # a client each: a new connection, which the kernel gives to one of the workers
        client = runtime_client(gateway.url)
        answer = client.invoke_endpoint(
            EndpointName="demo", TargetContainerHostname="alpha", Body=b"{}", ContentType="application/json"
        )
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert answer["Body"].read()  # read: its connection goes back to the pool, which closing closes
    each = own_metrics(workers_tmp)
    assert len(each) == 2 and sum(each) == sent and min(each) > 0, each  # both answered; none twice
    for _ in range(6):  # each scrape on a new connection, so on either worker: the same total
        assert scrape(gateway.url)[INVOCATIONS] == sent
    assert gateway.terminate() == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert list(workers_tmp.iterdir()) == []  # the sockets' folder is removed


def test_a_worker_that_dies_stops_the_others_and_the_supervisor_says_which(
    procs: Processes, tmp_path: Path
) -> None:
    doc = endpoint_doc("Direct", [container_doc("alpha", procs.container("alpha").url)])
    gateway = procs.gateway(doc, "--workers", "2")
    killed, other = children(gateway.popen.pid)
    os.kill(killed, signal.SIGKILL)
    assert gateway.popen.wait(timeout=60) == 2
    wait_until(lambda: not Path(f"/proc/{other}").exists(), "the other worker stopped", timeout=60)
    said = (tmp_path / "gateway.log").read_text()
    assert re.search(r"mce: worker [01] exited \(-9\); stopping the other workers", said), said


def test_what_several_workers_cannot_serve_is_refused(procs: Processes, tmp_path: Path) -> None:
    model = multi_model_doc("multi", procs.model_container().url, tmp_path / "models")
    path = procs.write_endpoint(endpoint_doc("Direct", [model]))
    refused = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", str(path), "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "--workers is for endpoints without MultiModel" in refused.stderr
    with socket.socket() as held:  # a port another server listens on is not shared through SO_REUSEPORT
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        doc = procs.write_endpoint(
            endpoint_doc("Direct", [container_doc("alpha", "http://127.0.0.1:9")]), "one.yaml"
        )
        refused = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", str(doc), "--port", port, "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in refused.stderr
    for bad in ("0", "65", "two"):
        refused = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", str(path), "--workers", bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2 and "--workers is a number of processes from 1 to 64" in refused.stderr
