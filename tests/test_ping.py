"""GET /ping: 200 when every container is healthy, else 503 naming each unhealthy one and why."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from conftest import Processes, container_doc, endpoint_doc


def ping(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_all_healthy(procs: Processes) -> None:
    a, b = procs.container("a"), procs.container("b")
    gateway = procs.gateway(endpoint_doc("Serial", [container_doc("a", a.url), container_doc("b", b.url)]))
    status, report = ping(gateway.url)
    assert status == 200
    assert report == {
        "status": "Healthy",
        "containers": {"a": {"status": "Healthy"}, "b": {"status": "Healthy"}},
    }


def test_unhealthy_and_dead_containers_are_named_with_the_reason(procs: Processes) -> None:
    ok = procs.container("ok")
    sick = procs.container("sick", ping_status=503)
    dead = procs.container("dead")
    gateway = procs.gateway(
        endpoint_doc(
            "Direct", [container_doc(n, p.url) for n, p in (("ok", ok), ("sick", sick), ("dead", dead))]
        )
    )
    dead.kill()
    status, report = ping(gateway.url)
    assert status == 503
    assert report["status"] == "Unhealthy"
    containers = report["containers"]
    assert containers["ok"] == {"status": "Healthy"}
    assert containers["sick"]["status"] == "Unhealthy" and "503" in containers["sick"]["reason"]
    assert containers["dead"]["status"] == "Unhealthy" and "refused" in containers["dead"]["reason"]


def test_health_follows_a_container_that_comes_back(procs: Processes) -> None:
    first = procs.container("svc")
    gateway = procs.gateway(endpoint_doc("Serial", [container_doc(None, first.url)]))
    assert ping(gateway.url)[0] == 200
    first.kill()
    status, report = ping(gateway.url)
    assert status == 503 and report["containers"]["container-1"]["status"] == "Unhealthy"
    procs.container("svc", port=first.port)  # it comes back, on its port
    status, report = ping(gateway.url)
    assert status == 200 and report["containers"]["container-1"] == {"status": "Healthy"}
