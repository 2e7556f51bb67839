"""A MultiModel container as a `Backend`: each invocation names its model, which the store has loaded.

The container implements SageMaker's multi-model API (spec §4.1) on its one port: `POST /models` to load,
`DELETE /models/{name}` to unload, `POST /models/{name}/invoke` to infer, `GET /models` to list. It is
healthy when `GET /ping` answers 200 and `GET /models` exists (SageMaker probes it too, spec §4.2).
Invocations always take the coroutine path: a model may have to be loaded first.
"""

from __future__ import annotations

import json
from pathlib import Path

from gateway import upstream
from gateway.backends.base import ERROR_BODY_LIMIT, error_status
from gateway.backends.http import HttpBackend, HttpReply, Translated
from gateway.endpoint import Container, MultiModelSpec
from gateway.invocation import Invocation
from gateway.multimodel.sources import source_for
from gateway.multimodel.store import Model, ModelStore, Unload


class MultiModelBackend(HttpBackend):
    def __init__(self, name: str, container: Container, *, base: Path, cache: Path) -> None:
        """`base`: the endpoint document's folder (a relative prefix is from there); `cache`: this
        container's disk cache, a folder the container can read at the same path."""
        super().__init__(name, container.Backend)
        assert container.ModelDataUrl is not None, "the endpoint document requires it for Mode MultiModel"
        config = container.MultiModelConfig
        self.store = ModelStore(
            name,
            source_for(container.ModelDataUrl, base),
            cache,
            self,
            container.Backend.MultiModel or MultiModelSpec(),
            keep=config is None or config.ModelCacheSetting == "Enabled",
        )
        self._host = self.server.host_header
        self._models_request = self.server.get_request(b"/models")
        self._invoke_heads: dict[str, bytes] = {}

    async def start(self) -> None:
        await super().start()
        self.store.prepare()

    async def close(self) -> None:
        await self.store.close()
        await super().close()

    async def invoke(self, call: Invocation) -> HttpReply:
        """Invoke the call's model, loaded first if need be. A 404 (the container lost the model) loads it
        again, a 507 (out of memory) unloads an idle model; either is tried once more."""
        assert call.target_model is not None, (
            "the router sends a MultiModel container only calls with TargetModel"
        )
        retried = False
        while True:
            model = await self.store.acquire(call.target_model)
            try:
                response = await self._invoke_model(model, call)
                if 200 <= response.status < 300:
                    return HttpReply(response, self)
                body = await self.error_body(response)
                if retried or response.status not in (404, 507):
                    raise error_status(self.name, response.status, body)
                if response.status == 404:
                    self.store.lost(model)
                else:
                    await self.store.make_room(
                        model,
                        Unload.OUT_OF_MEMORY,
                        f"the container answered 507 (out of memory) to invoking {model.target}",
                    )
            finally:
                self.store.release(model)
            retried = True

    async def _invoke_model(self, model: Model, call: Invocation) -> upstream.Response:
        head = self._invoke_heads.get(model.name)
        if head is None:  # once per model: the request line and Host header of its invocations
            head = self._invoke_heads[model.name] = b"POST /models/%s/invoke HTTP/1.1\r\n%s" % (
                model.name.encode(),
                self._host,
            )
        with self.translated:
            return await self.server.pool.request(self.request_bytes(call, head), timeout=self._timeout)

    async def check_health(self) -> str | None:
        reason = await super().check_health()
        if reason is not None:
            return reason
        answer = await self.server.probe(self._models_request, "GET /models")
        if isinstance(answer, str):
            return answer
        status, _ = answer
        if status != 200:
            return (
                f"{self.address} answered GET /models with {status}: a MultiModel container implements "
                "SageMaker's multi-model API (GET/POST /models, /models/{name}/invoke)"
            )
        return None

    # The store's ModelApi: the container's model management.

    async def load_model(self, name: str, url: str, target: str, timeout: float) -> tuple[int, bytes]:
        body = json.dumps({"model_name": name, "url": url}).encode()
        return await self._manage(
            b"POST /models HTTP/1.1\r\n%sContent-Type: application/json\r\nX-Amzn-SageMaker-Target-Model: "
            b"%s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self._host, target.encode(), len(body), body),
            timeout,
        )

    async def unload_model(self, name: str, target: str, timeout: float) -> tuple[int, bytes]:
        return await self._manage(
            b"DELETE /models/%s HTTP/1.1\r\n%sX-Amzn-SageMaker-Target-Model: %s\r\nContent-Length: 0\r\n\r\n"
            % (name.encode(), self._host, target.encode()),
            timeout,
        )

    async def _manage(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        with Translated(self, timeout):
            response = await self.server.pool.request(request, timeout=timeout)
            if not 200 <= response.status < 300:
                return response.status, await self.error_body(response)
            try:
                return response.status, await response.read(ERROR_BODY_LIMIT)
            except upstream.BodyTooLarge:
                return response.status, b""  # the status is the answer; a large body is not read
