"""The local SageMaker's state database under faults, with real processes: another process holding it
(control writes refused at once as retryable, invocations and transitions unhindered, nothing lost), and a
database that is not sound (one clear line, never a traceback, never a silent reset)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import wait_until
from test_local_sagemaker import ROLE, LocalSageMaker, deploy


def sound_database(path: Path) -> None:
    """A real SQLite file of some size, as a used state would be."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE filler (n INTEGER, text TEXT)")
    db.executemany("INSERT INTO filler VALUES (?, ?)", [(n, "x" * 200) for n in range(500)])
    db.commit()
    db.close()


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database at all\n" * 100)


def truncated(path: Path) -> None:
    sound_database(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def folder(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("spoil", [garbage, truncated, empty, folder])
def test_an_unsound_database_is_one_clear_line(tmp_path: Path, spoil: object) -> None:
    state = tmp_path / "state"
    state.mkdir()
    assert callable(spoil)
    spoil(state / "mce.db")
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "up", "--port", "0", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert str(state / "mce.db") in lines[0] and "Move it away" in lines[0], lines[0]
    if spoil is not folder:  # never reset: the file is as it was
        assert (state / "mce.db").is_file()


def test_a_held_database_refuses_writes_at_once_and_loses_nothing(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path) as local:
        sm, runtime = local.sagemaker(), local.runtime()
        deploy(sm, "serving", ("AllTraffic", "test/echo:1", 1.0))
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="serving", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        deploy(sm, "gated", ("AllTraffic", "test/gated:1", 1.0))  # Creating until the test opens its gate
        holder = sqlite3.connect(local.state / "mce.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(ClientError) as refused:
                sm.create_model(
                    ModelName="later", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"}
                )
            error = refused.value.response
            assert error["Error"]["Code"] == "ServiceUnavailable", error
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 503 and "held by another process" in str(
                error
            )
            for _ in range(20):  # the data plane does not wait on the database
                answer = runtime.invoke_endpoint(EndpointName="serving", Body=b"{}")
                assert json.loads(answer["Body"].read())["container"] == "echo"
            (tmp_path / "gate").touch()  # the gated endpoint comes up while the database is held
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName="gated", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
            assert json.loads(runtime.invoke_endpoint(EndpointName="gated", Body=b"{}")["Body"].read())
            assert sm.list_models()["Models"] and "later" not in str(sm.list_models())
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        def written() -> bool:  # the transition kept meanwhile reaches the file
            with sqlite3.connect(local.state / "mce.db") as db:
                row = db.execute("SELECT status FROM resources WHERE kind = 'endpoint' AND name = 'gated'")
                return bool(row.fetchone() == ("InService",))

        wait_until(written, "the held transition to be written", 30)
        sm.create_model(ModelName="later", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
