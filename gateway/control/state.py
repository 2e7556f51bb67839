"""The local SageMaker's state: models, endpoint configurations and endpoints, in one SQLite file.

Each resource is kept as the request that created it (JSON, as the client sent it) plus what SageMaker
adds: its ARN, its times, and for an endpoint its status. Names are unique regardless of case, as
SageMaker's are (its ARNs are lower-cased). One connection, used from the event loop only: every
control-plane call runs to its end without awaiting in between, so calls never interleave (D25).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL, CONFIG, ENDPOINT = "model", "endpoint-config", "endpoint"  # the kinds, as in their ARNs
COMPONENT = "inference-component"

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,             -- model | endpoint-config | endpoint | inference-component
    name TEXT NOT NULL COLLATE NOCASE,
    arn TEXT NOT NULL,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    request TEXT NOT NULL,          -- the Create request, JSON
    status TEXT,                    -- endpoints, components: Creating, InService, Updating, Failed, Deleting
    failure TEXT,                   -- endpoints, components: FailureReason
    config TEXT,                    -- endpoints: the endpoint configuration it serves
    pending TEXT,                   -- endpoints: the configuration an update is moving to
    deployed TEXT,                  -- endpoints, components: what it runs (configuration and models, JSON)
    PRIMARY KEY (kind, name)
);
"""


@dataclass
class Resource:
    kind: str
    name: str
    arn: str
    created: float
    modified: float
    request: dict[str, Any]
    status: str | None = None
    failure: str | None = None
    config: str | None = None
    pending: str | None = None
    deployed: dict[str, Any] | None = None


class State:
    def __init__(self, path: Path | None) -> None:
        """`path`: the database file (its folder is made); None keeps the state in memory only."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(self, resource: Resource) -> None:
        self._db.execute(
            "INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                resource.kind,
                resource.name,
                resource.arn,
                resource.created,
                resource.modified,
                json.dumps(resource.request),
                resource.status,
                resource.failure,
                resource.config,
                resource.pending,
                json.dumps(resource.deployed) if resource.deployed is not None else None,
            ),
        )

    def get(self, kind: str, name: str) -> Resource | None:
        row = self._db.execute("SELECT * FROM resources WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        return _resource(row) if row is not None else None

    def all(self, kind: str) -> list[Resource]:
        rows = self._db.execute("SELECT * FROM resources WHERE kind = ? ORDER BY created, name", (kind,))
        return [_resource(row) for row in rows]

    def update(self, kind: str, name: str, **fields: str | dict[str, Any] | None) -> None:
        """Set endpoint fields (status, failure, config, pending, deployed); the modification time is now."""
        assignments = ", ".join(f"{key} = ?" for key in fields)
        values = [json.dumps(v) if isinstance(v, dict) else v for v in fields.values()]
        self._db.execute(
            f"UPDATE resources SET {assignments}, modified = ? WHERE kind = ? AND name = ?",
            (*values, time.time(), kind, name),
        )

    def remove(self, kind: str, name: str) -> None:
        self._db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))


def _resource(row: tuple[Any, ...]) -> Resource:
    kind, name, arn, created, modified, request, status, failure, config, pending, deployed = row
    return Resource(
        kind,
        name,
        arn,
        created,
        modified,
        json.loads(request),
        status,
        failure,
        config,
        pending,
        json.loads(deployed) if deployed is not None else None,
    )
