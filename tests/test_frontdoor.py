"""The front door in-process: a request's head and body go through `FrontDoor.admit` and `complete`, its
cycle answers into a recording responder, and in-process backends answer it, one through the callback
path (`begin`, no task) and one only as a task (`invoke`). Both paths give the same answer, hop by hop,
and the same failures; what the front door decides is pinned without a socket (the HTTP side is tested
through real sockets everywhere else).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.backends import BufferedReply
from gateway.backends.base import Receiver
from gateway.cycle import Cycle
from gateway.dataplane import DataPlane
from gateway.endpoint import parse_endpoint
from gateway.errors import GatewayError, ModelError
from gateway.frontdoor import FrontDoor
from gateway.invocation import Invocation
from gateway.metrics import Metrics
from gateway.origins import Origins
from gateway.routing import Operation
from gateway.service import Service
from gateway.telemetry import Telemetry

HOST = {b"host": b"127.0.0.1:8080"}


class Recorder:
    """A responder that writes down what it is told (gateway.cycle's Responder), and a client whose
    two framings both answer into it, each marking its events with its name."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.done = asyncio.Event()
        self.runtime = _Framing(self, "runtime")
        self.control = _Framing(self, "control")


class _Framing:
    def __init__(self, recorder: Recorder, name: str) -> None:
        self._recorder, self._name = recorder, name

    def _note(self, *event: Any) -> None:
        self._recorder.events.append((self._name, *event))

    def whole(self, cycle: Cycle, reply: Any, chunks: list[bytes], size: int) -> None:
        assert size == sum(map(len, chunks))
        self._note("whole", reply.content_type, b"".join(chunks))

    def start(self, cycle: Cycle, reply: Any, length: int | None) -> None:
        self._note("start", reply.content_type, length)

    def body(self, chunks: list[bytes]) -> None:
        self._note("body", b"".join(chunks))

    def end(self) -> None:
        self._note("end")

    def document(
        self, cycle: Cycle, status: int, content_type: bytes, body: bytes, extra: bytes = b""
    ) -> None:
        self._note("document", status, content_type, body)

    def fail(self, cycle: Cycle, error: GatewayError, begun: bool) -> None:
        self._note("fail", error.status, error.code, error.message, begun)

    async def drained(self) -> None:
        return None

    def done(self, cycle: Cycle) -> None:
        self._recorder.done.set()


class TaskBackend:
    """A container that answers in-process, only as a task: the cycle awaits `invoke`. It answers
    `prefix + body` (as text/<name>), or fails with `status` when set."""

    def __init__(self, name: str, *, status: int | None = None) -> None:
        self.name = name
        self.status = status
        self.sent: list[Invocation] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def check_health(self) -> str | None:
        return None

    def _outcome(self, call: Invocation) -> BufferedReply | ModelError:
        self.sent.append(call)
        if self.status is not None:
            return ModelError(f"{self.name} failed", container=self.name, original_status=self.status)
        return BufferedReply(self.name.encode() + b"(" + call.body + b")", b"text/" + self.name.encode())

    async def invoke(self, call: Invocation) -> BufferedReply:
        await asyncio.sleep(0)  # a real turn of the loop, as a container's answer takes
        outcome = self._outcome(call)
        if isinstance(outcome, ModelError):
            raise outcome
        return outcome


class CallbackBackend(TaskBackend):
    """The same container, starting each invocation without a task (`begin`) and answering through the
    receiver's callbacks on the loop's next turn."""

    def __init__(self, name: str, *, status: int | None = None) -> None:
        super().__init__(name, status=status)
        self.begun = 0

    def begin(self, call: Invocation, receiver: Receiver, limit: int) -> asyncio.Handle:
        self.begun += 1
        outcome = self._outcome(call)
        if isinstance(outcome, ModelError):
            return asyncio.get_running_loop().call_soon(receiver.error, outcome)
        return asyncio.get_running_loop().call_soon(receiver.reply, outcome)


def service(mode: str, *backends: TaskBackend) -> Service:
    endpoint = parse_endpoint(
        {
            "Containers": [{"ContainerHostname": backend.name} for backend in backends],
            "InferenceExecutionConfig": {"Mode": mode},
        },
        source="test",
        default_name="door",
    )
    names = [backend.name for backend in backends]
    metrics = Metrics("door", "AllTraffic", names, single_hop=mode == "Direct")
    return Service(DataPlane(endpoint, backends), Telemetry(metrics, names))


async def ask(
    door: FrontDoor, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes
) -> list[Any]:
    """One request through the front door, as the HTTP server makes it: admit at the head, complete at
    the body, start; the events its responder was told."""
    client = Recorder()
    cycle = door.admit(method, url, {**HOST, **headers}, len(body), client)
    if cycle.refusal is None or not cycle.closes:
        door.complete(cycle, method, url, {**HOST, **headers}, body)
    cycle.start()
    await asyncio.wait_for(client.done.wait(), 5)
    return client.events


def door_for(mounted: Service) -> FrontDoor:
    door = FrontDoor(origins=Origins("127.0.0.1"))
    door.mount("door", [(mounted, 1.0)])
    return door


@pytest.mark.parametrize("mode", ["Direct", "Serial"])
def test_the_callback_path_and_the_task_path_answer_alike(mode: str) -> None:
    async def run(kind: type[TaskBackend]) -> tuple[list[Any], list[list[Invocation]]]:
        backends = [kind("a"), kind("b")]
        door = door_for(service(mode, *backends))
        headers = {b"content-type": b"text/plain", b"accept": b"text/b"}
        if mode == "Direct":
            headers[b"x-amzn-sagemaker-target-container-hostname"] = b"b"
        events = await ask(door, b"POST", b"/endpoints/door/invocations", headers, b"x")
        if kind is CallbackBackend:
            assert sum(backend.begun for backend in backends if isinstance(backend, CallbackBackend)) > 0
        return events, [backend.sent for backend in backends]

    by_callbacks, sent_callbacks = asyncio.run(run(CallbackBackend))
    by_tasks, sent_tasks = asyncio.run(run(TaskBackend))
    expected = b"b(a(x))" if mode == "Serial" else b"b(x)"
    assert by_callbacks == by_tasks == [("runtime", "whole", b"text/b", expected)]
    # each container was sent the same: the body, Content-Type and Accept each hop gets (DataPlane's rule)
    assert [[(c.body, c.content_type, c.accept) for c in sent] for sent in sent_callbacks] == [
        [(c.body, c.content_type, c.accept) for c in sent] for sent in sent_tasks
    ]
    if mode == "Serial":
        assert [(c.body, c.content_type, c.accept) for c in sent_tasks[1]] == [
            (b"a(x)", b"text/a", b"text/b")
        ]
        assert sent_tasks[0][0].accept is None  # the client's Accept is for the pipeline's answer
        assert sent_tasks[0][0].traceparent == sent_tasks[1][0].traceparent is not None


@pytest.mark.parametrize("kind", [CallbackBackend, TaskBackend])
def test_a_failing_container_fails_the_request_the_same_on_both_paths(kind: type[TaskBackend]) -> None:
    async def run() -> list[Any]:
        door = door_for(service("Serial", kind("a"), kind("b", status=500)))
        return await ask(door, b"POST", b"/endpoints/door/invocations", {}, b"x")

    [(framing, event, status, code, message, begun)] = asyncio.run(run())
    assert (framing, event, status, code, begun) == ("runtime", "fail", 424, "ModelError", False)
    assert message == "b failed"


def test_what_the_front_door_decides_from_a_head() -> None:
    """Refusals come from the head: a foreign Host (ends the connection), an unknown endpoint, a body over
    6 MB by its Content-Length (ends it too), a hostname that is not a container; nothing reaches a
    container."""

    async def run() -> None:
        backend = TaskBackend("a")
        door = door_for(service("Direct", backend))
        client = Recorder()
        invoke = b"/endpoints/door/invocations"
        target = {b"x-amzn-sagemaker-target-container-hostname": b"a"}

        foreign = door.admit(b"POST", invoke, {b"host": b"evil.example"}, 2, client)
        assert foreign.closes and foreign.refusal is not None and foreign.refusal.status == 403

        unknown = door.admit(b"POST", b"/endpoints/other/invocations", HOST, 2, client)
        assert not unknown.closes and unknown.refusal is not None
        assert unknown.refusal.code == "ValidationError" and "other" in unknown.refusal.message

        large = door.admit(b"POST", invoke, {**HOST, **target}, 6 * 1024 * 1024 + 1, client)
        assert large.closes and large.refusal is not None and "6 MB" in large.refusal.message

        stranger = door.admit(
            b"POST", invoke, {**HOST, b"x-amzn-sagemaker-target-container-hostname": b"z"}, 2, client
        )
        assert stranger.refusal is not None and stranger.refusal.code == "ValidationError"

        admitted = door.admit(b"POST", invoke, {**HOST, **target}, 2, client)
        assert admitted.refusal is None and admitted.operation is Operation.INVOKE
        assert admitted.route is not None and admitted.route.names == ("a",)
        assert backend.sent == []

    asyncio.run(run())


def test_the_only_endpoints_ping_and_an_unknown_path() -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        door = door_for(service("Direct", CallbackBackend("a")))
        return await ask(door, b"GET", b"/ping", {}, b""), await ask(door, b"GET", b"/nowhere", {}, b"")

    ping, nowhere = asyncio.run(run())
    [(framing, event, status, content_type, body)] = ping
    assert (framing, event, status, content_type) == ("runtime", "document", 200, b"application/json")
    assert json.loads(body)["status"] == "Healthy"
    [(framing, event, status, _, _, begun)] = nowhere
    assert (framing, event, status, begun) == ("runtime", "fail", 404, False)
