"""Nothing left behind by `mce up`, with real processes and real kills: containers a killed mce left
running are stopped by the next mce on the same state, and every child mce starts is reaped when it ends."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import wait_until
from test_local_sagemaker import LocalSageMaker, deploy, in_service


def children(pid: int) -> dict[int, str]:
    """The child processes of `pid`, each with its state letter (Z: a zombie, never reaped)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":\t", 1) for line in (entry / "status").read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if int(status.get("PPid", "0")) == pid:
            found[int(entry.name)] = status["State"][0]
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_containers_a_killed_mce_left_are_stopped_by_the_next(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = LocalSageMaker(tmp_path, state)
    try:
        sm = first.sagemaker()
        deploy(sm, "kept", ("AllTraffic", "test/echo:1", 1.0))
        in_service(sm, "kept")
        (container,) = children(first.proc.popen.pid)  # the echo container, in a process group of its own
    finally:
        first.proc.kill()  # kill -9: nothing of mce runs to stop it
    assert alive(container), "the container should outlive a killed mce (its own process group)"
    with LocalSageMaker(tmp_path, state) as second:
        wait_until(lambda: not alive(container), "the left container to be stopped", 30)
        assert any("stopped a container an earlier mce left running" in line for line in second.proc.early)
        sm = second.sagemaker()
        in_service(sm, "kept")  # and the endpoint is back, on a container of its own
        answer = second.runtime().invoke_endpoint(EndpointName="kept", Body=b"{}")
        assert answer["Body"].read()


def test_deleting_twice_quickly_leaves_no_zombie(tmp_path: Path) -> None:
    """DeleteEndpoint asked again while the endpoint is Deleting is the same one deletion: answered, and
    every process mce started for the endpoint is reaped. The containers hold out against SIGTERM until the
    test lets them go, so the second call lands while the first is still stopping them."""
    with LocalSageMaker(tmp_path) as local:
        sm = local.sagemaker()
        for name in ("first", "second"):
            deploy(sm, name, ("AllTraffic", "test/stubborn:1", 1.0))
            in_service(sm, name)
        for name in ("first", "second"):
            sm.delete_endpoint(EndpointName=name)
            sm.delete_endpoint(EndpointName=name)
        (tmp_path / "let-go").touch()
        for name in ("first", "second"):
            sm.get_waiter("endpoint_deleted").wait(
                EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
        left = children(local.proc.popen.pid)
        assert left == {}, left
        assert os.listdir(local.state / "_processes") == []  # nothing recorded as running
