"""The local SageMaker's state: its resources and their tags, in one SQLite file.

Each resource is a row: the request that created it (JSON, as the client sent it) plus what SageMaker adds
(its ARN, its times, and for a hosted resource its status and what it runs); gateway.control.resources
gives each kind its type. Names are unique regardless of case, as SageMaker's are (its ARNs are
lower-cased). Tags are kept by ARN and go with their resource. One connection, used from the event loop
only: every control-plane call runs to its end without awaiting in between, so calls never interleave (D25).

Endpoints that `mce up DOC` started from an endpoint document are resources too, kept in memory only: they
run while that mce up runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from gateway.control.resources import (
    ComponentResource,
    ComponentSpec,
    ConfigResource,
    Deployed,
    EndpointResource,
    Hosted,
    Kind,
    ModelResource,
    Resource,
    Status,
)
from gateway.errors import ControlError, StateBusy, StateFull

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,             -- model | endpoint-config | endpoint | inference-component
    name TEXT NOT NULL COLLATE NOCASE,
    arn TEXT NOT NULL,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    request TEXT NOT NULL,          -- the Create request, JSON, less its Tags
    status TEXT,                    -- hosted: Creating, InService, Updating, Failed, Deleting
    failure TEXT,                   -- hosted: FailureReason
    config TEXT,                    -- hosted, JSON: the last DeploymentConfig; components: their endpoint
    pending TEXT,                   -- hosted: what an update moves to (JSON)
    deployed TEXT,                  -- hosted: what it runs (JSON)
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS tags (
    arn TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    position INTEGER NOT NULL,      -- the order tags were first added in (ListTags answers in it)
    PRIMARY KEY (arn, key)
);
"""
logger = logging.getLogger(__name__)

RETRY = 0.5  # seconds between attempts to write what a held database refused
VERSION = 2  # PRAGMA user_version: 1 kept `pending` as a configuration name, and no tags

R = TypeVar("R", bound=Resource)
TYPES: dict[Kind, type[Resource]] = {
    Kind.MODEL: ModelResource,
    Kind.CONFIG: ConfigResource,
    Kind.ENDPOINT: EndpointResource,
    Kind.COMPONENT: ComponentResource,
}


class StateError(Exception):
    """The state database cannot be used (corrupt, not a database, a folder); the message names the file
    and says what to do."""


class State:
    def __init__(self, path: Path | None) -> None:
        """`path`: the database file (its folder is made); None keeps the state in memory only. StateError
        if the file is there but is not a sound mce state: it is never reset silently."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _check_file(path)
        self.path = path
        # timeout 0: a database another process holds is answered at once (a control call is refused as
        # retryable, a transition is written later), never waited on with the event loop stopped
        self._db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None, timeout=0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            if self._db.execute("PRAGMA user_version").fetchone()[0] < VERSION:
                self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StateError(_unusable(path, str(exc))) from None
        self._documents: dict[str, EndpointResource] = {}  # mce up DOC's endpoints, by lower-cased name
        # writes of transitions that found the database held by another process: kept (and read back)
        # here, and written once it is free, in order
        self._unsaved: dict[tuple[str, str], Resource | None] = {}
        self._retry: asyncio.TimerHandle | None = None

    # writing
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One control call's writes, all or none. StateBusy (retryable) if another process holds the
        database, StateFull if the disk is full: nothing is written then."""
        try:
            self._flush()
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._failure(exc) from None
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._db.execute("ROLLBACK")
            raise self._failure(exc) from None

    def _failure(self, exc: sqlite3.OperationalError) -> ControlError:
        where = self.path or "memory"
        if "full" in str(exc):
            return StateFull(
                f"The disk under the state database {where} is full: free space there, then retry."
            )
        return StateBusy(
            f"The state database {where} is held by another process ({exc}); retry (botocore's retries "
            "do), or stop the process that holds it."
        )

    def _write(self, key: tuple[str, str], resource: Resource | None, write: Callable[[], None]) -> None:
        """A transition's write: now, or, when another process holds the database or the disk is full,
        as soon as it can be (reads see it meanwhile)."""
        if key not in self._unsaved:
            try:
                write()
                return
            except sqlite3.OperationalError as exc:
                logger.warning("state %s: %s; the change is kept and written when it can be", self.path, exc)
        self._unsaved.pop(key, None)  # re-inserted last: written in the order the changes happened
        self._unsaved[key] = resource
        self._schedule()

    def _schedule(self) -> None:
        if self._retry is None:
            with contextlib.suppress(RuntimeError):  # no running loop (tests of the state alone)
                self._retry = asyncio.get_running_loop().call_later(RETRY, self._retried)

    def _retried(self) -> None:
        self._retry = None
        try:
            self._flush()
        except sqlite3.OperationalError:
            self._schedule()

    def _flush(self) -> None:
        """Write what transitions could not (raises sqlite3.OperationalError while it still cannot)."""
        if not self._unsaved:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for (kind, name), resource in self._unsaved.items():
                if resource is None:
                    self._delete(kind, name)
                else:
                    self._update(resource)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._unsaved.clear()
        logger.info("state %s: the changes kept while it was held are written", self.path)

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        """A state file of an earlier mce: what endpoints run, in today's form; an update that was in
        flight is not resumed (restore starts the endpoint from what it ran)."""
        rows = self._db.execute("SELECT kind, name, request, deployed FROM resources").fetchall()
        for kind, name, request, deployed in rows:
            if kind == Kind.ENDPOINT.value and deployed is not None:
                old = json.loads(deployed)
                if isinstance(old.get("config"), dict):
                    config = dict(old["config"])
                    new = {
                        "config": config.pop("EndpointConfigName"),
                        "request": config,
                        "models": old["models"],
                    }
                    deployed = json.dumps(new)
                self._db.execute(
                    "UPDATE resources SET deployed = ?, config = NULL WHERE kind = ? AND name = ?",
                    (deployed, kind, name),
                )
            elif kind == Kind.COMPONENT.value:
                extras = json.dumps({"endpoint": json.loads(request)["EndpointName"]})
                self._db.execute(
                    "UPDATE resources SET config = ? WHERE kind = ? AND name = ?", (extras, kind, name)
                )
        self._db.execute("UPDATE resources SET pending = NULL")
        self._db.execute(f"PRAGMA user_version = {VERSION}")

    # resources
    def add(self, resource: Resource) -> None:
        if isinstance(resource, EndpointResource) and resource.document:
            self._documents[resource.name.lower()] = resource
            return
        self._db.execute(
            "INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                resource.kind.value,
                resource.name,
                resource.arn,
                resource.created,
                resource.modified,
                *self._columns(resource),
            ),
        )

    def save(self, resource: Resource) -> None:
        """Write back a resource's changed fields (gateway.control.endpoints.Endpoints.transition)."""
        if isinstance(resource, EndpointResource) and resource.document:
            return
        self._write(_key(resource), resource, lambda: self._update(resource))

    def _update(self, resource: Resource) -> None:
        self._db.execute(
            "UPDATE resources SET modified = ?, request = ?, status = ?, failure = ?, config = ?, "
            "pending = ?, deployed = ? WHERE kind = ? AND name = ?",
            (resource.modified, *self._columns(resource), resource.kind.value, resource.name),
        )

    def get(self, cls: type[R], name: str) -> R | None:
        if cls is EndpointResource and name.lower() in self._documents:
            return self._documents[name.lower()]  # type: ignore[return-value]
        key = (cls.kind.value, name.lower())
        if key in self._unsaved:
            return self._unsaved[key]  # type: ignore[return-value]
        row = self._db.execute(
            "SELECT * FROM resources WHERE kind = ? AND name = ?", (cls.kind.value, name)
        ).fetchone()
        return _resource(cls, row) if row is not None else None

    def all(self, cls: type[R]) -> list[R]:
        rows = self._db.execute(
            "SELECT * FROM resources WHERE kind = ? ORDER BY created, name", (cls.kind.value,)
        )
        found = [_resource(cls, row) for row in rows]
        if self._unsaved:
            found = [self._unsaved.get(_key(r), r) for r in found]  # type: ignore[misc]
            found = [r for r in found if r is not None]
        if cls is EndpointResource:
            found += self._documents.values()  # type: ignore[arg-type]
        return found

    def by_arn(self, arn: str) -> Resource | None:
        """The resource an ARN of this region and account names (AddTags, ListTags, DeleteTags)."""
        row = self._db.execute("SELECT * FROM resources WHERE arn = ?", (arn,)).fetchone()
        if row is not None:
            return _resource(TYPES[Kind(row[0])], row)
        return next((d for d in self._documents.values() if d.arn == arn), None)

    def remove(self, resource: Resource) -> None:
        """The resource and its tags go (a transition's removal is kept, as a save is, while it cannot)."""
        if self._documents.pop(resource.name.lower(), None) is not None:
            return
        self._write(_key(resource), None, lambda: self._delete(resource.kind.value, resource.name))

    def _delete(self, kind: str, name: str) -> None:
        row = self._db.execute(
            "SELECT arn FROM resources WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        self._db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))
        if row is not None:
            self._db.execute("DELETE FROM tags WHERE arn = ?", (row[0],))

    # tags
    def tags(self, arn: str) -> list[dict[str, str]]:
        rows = self._db.execute("SELECT key, value FROM tags WHERE arn = ? ORDER BY position", (arn,))
        return [{"Key": key, "Value": value} for key, value in rows]

    def tag(self, arn: str, tags: list[dict[str, str]]) -> None:
        """Add tags, or overwrite the value of a key the resource has."""
        position = self._db.execute("SELECT COALESCE(MAX(position), 0) FROM tags WHERE arn = ?", (arn,))
        last = position.fetchone()[0]
        for n, tag in enumerate(tags, start=last + 1):
            self._db.execute(
                "INSERT INTO tags VALUES (?, ?, ?, ?) "
                "ON CONFLICT (arn, key) DO UPDATE SET value = excluded.value",
                (arn, tag["Key"], tag.get("Value", ""), n),
            )

    def untag(self, arn: str, keys: list[str]) -> None:
        self._db.executemany("DELETE FROM tags WHERE arn = ? AND key = ?", [(arn, key) for key in keys])

    @staticmethod
    def _columns(resource: Resource) -> tuple[Any, ...]:
        """request, status, failure, config, pending, deployed."""
        request = json.dumps(resource.request)
        if not isinstance(resource, (EndpointResource, ComponentResource)):
            return request, None, None, None, None, None
        extras: dict[str, Any] = {"last_deployment": resource.last_deployment}
        if isinstance(resource, ComponentResource):
            extras["endpoint"] = resource.endpoint
        return request, resource.status.value, resource.failure, json.dumps(extras), *_specs(resource)


def _key(resource: Resource) -> tuple[str, str]:
    return resource.kind.value, resource.name.lower()


def _check_file(path: Path) -> None:
    """What SQLite would take silently or answer with a bare error: a folder, an empty file."""
    if path.is_dir():
        raise StateError(_unusable(path, "it is a folder"))
    if path.exists() and path.stat().st_size == 0:
        raise StateError(_unusable(path, "it is empty (a truncated file?)"))


def _unusable(path: Path | None, why: str) -> str:
    return (
        f"the state database {path} cannot be used: {why}. Move it away to start with an empty state (the "
        "endpoints it held are then forgotten), or give another --state."
    )


def _specs(resource: EndpointResource | ComponentResource) -> tuple[str | None, str | None]:
    pending, deployed = resource.pending, resource.deployed
    return (
        json.dumps(pending.to_json()) if pending is not None else None,
        json.dumps(deployed.to_json()) if deployed is not None else None,
    )


def _resource(cls: type[R], row: tuple[Any, ...]) -> R:
    _, name, arn, created, modified, request, status, failure, config, pending, deployed = row
    resource = cls(name, arn, created, modified, json.loads(request))
    if isinstance(resource, Hosted):
        resource.status, resource.failure = Status(status), failure
        extras = json.loads(config) if config is not None else {}
        resource.last_deployment = extras.get("last_deployment")
    if isinstance(resource, EndpointResource):
        resource.deployed = Deployed.from_json(json.loads(deployed)) if deployed is not None else None
        resource.pending = Deployed.from_json(json.loads(pending)) if pending is not None else None
    elif isinstance(resource, ComponentResource):
        resource.endpoint = extras["endpoint"]
        resource.deployed = ComponentSpec.from_json(json.loads(deployed)) if deployed is not None else None
        resource.pending = ComponentSpec.from_json(json.loads(pending)) if pending is not None else None
    return resource
