"""SageMaker's part of a multi-model endpoint, for one MultiModel container: which of its models are loaded.

A request names its model with `TargetModel`. The store finds the artifact under the container's prefix,
unpacks it into the disk cache, and has the container load it (`POST /models`, spec §4.1) under an opaque
name; concurrent first requests for one model share that one load. A request waits for its model up to
`ModelLoadWaitInSeconds` (SageMaker's 60 s) and is then answered ModelNotReadyException while the load goes
on, up to `ModelLoadTimeoutInSeconds` (360 s), as SageMaker does (spec §4.2).

Room is made by unloading the least recently used model that no request is using (`DELETE /models/{name}`):
when the container answers 507 to a load or an invocation, and, with a memory budget, before a load while
the container's processes use more than the budget. Unloaded models stay unpacked on disk until the disk
cache passes its bound. Every load, unload and deletion is logged with its reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from gateway.backends.base import error_status
from gateway.endpoint import MultiModelSpec
from gateway.errors import ModelError, ModelNotReady, ValidationError
from gateway.histogram import Histogram
from gateway.multimodel.sources import ArtifactBroken, ArtifactMissing, Source, folder_size, unpack

logger = logging.getLogger("gateway.models")

MIB = 1024 * 1024
MEMORY_SETTLE = 2.0  # seconds an unloaded model's memory may take to be given back
REFUSED_CLEANUP = 10.0  # seconds to remove a model the container refused but kept registered
now = time.perf_counter


class Unload(StrEnum):
    """Why a model was unloaded: a bounded label for gateway.metrics."""

    OUT_OF_MEMORY = "out_of_memory"  # the container answered 507
    MEMORY_BUDGET = "memory_budget"  # the container's processes were over MemoryBudgetInMiB
    CACHE_DISABLED = "cache_disabled"  # ModelCacheSetting: Disabled unloads after each request


class ModelApi(Protocol):
    """The container's model management, as the store uses it: (HTTP status, body); transport failures raise
    `ModelError`."""

    async def load_model(self, name: str, url: str, target: str, timeout: float) -> tuple[int, bytes]: ...

    async def unload_model(self, name: str, target: str, timeout: float) -> tuple[int, bytes]: ...


@dataclass(eq=False)
class Model:
    """One `TargetModel` of the container, loaded or not."""

    target: str
    name: str  # the opaque name the container knows it by (spec §4.1)
    folder: Path  # its place in the disk cache
    url: Path | None = None  # what the container loads: the unpacked artifact (or a folder read in place)
    on_disk: int = 0  # bytes of it in the disk cache
    loaded: bool = False
    refused: bool = False  # the container's last answer to loading it was 507
    users: int = 0  # requests waiting for it or running on it: while > 0 it is never unloaded
    last_used: float = field(default_factory=time.monotonic)
    loading: asyncio.Task[None] | None = None
    unloading: asyncio.Future[None] | None = None

    @property
    def idle(self) -> bool:
        return self.loaded and self.users == 0 and self.unloading is None


class ModelStats:
    """The container's multi-model metrics as SageMaker names them (spec §4.4), read by gateway.metrics."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store
        self.loading_wait = Histogram()  # ModelLoadingWaitTime: a request waiting for its model
        self.downloading = Histogram()  # ModelDownloadingTime
        self.loading = Histogram()  # ModelLoadingTime: the container's load call
        self.unloading = Histogram()  # ModelUnloadingTime
        self.lookups = 0  # requests; ModelCacheHit's average is hits / lookups
        self.hits = 0
        self.unloads: dict[Unload, int] = {}  # why models were unloaded -> how many times

    @property
    def loaded(self) -> int:  # LoadedModelCount
        return sum(model.loaded for model in self._store.models.values())


class ModelStore:
    def __init__(
        self,
        container: str,
        source: Source,
        cache: Path,
        api: ModelApi,
        spec: MultiModelSpec,
        *,
        keep: bool = True,
    ) -> None:
        """`keep` False is `ModelCacheSetting: Disabled`: a model is unloaded once its requests are done."""
        self.container = container
        self.source = source
        self.cache = cache
        self.api = api
        self.spec = spec
        self.keep = keep
        self.models: dict[str, Model] = {}
        self.stats = ModelStats(self)
        # bytes used by the container's processes, when the gateway launched it (`mce up`); else None
        self.memory: Callable[[], int | None] | None = None
        self._background: set[asyncio.Future[object]] = set()
        self._budget_unmeasured = False  # warned that the memory budget cannot be measured

    def prepare(self) -> None:
        """A fresh disk cache: what an earlier run left there may be stale."""
        if self.cache.exists():
            shutil.rmtree(self.cache)
        self.cache.mkdir(parents=True)

    async def acquire(self, target_model: bytes) -> Model:
        """The model, loaded, and counted as in use until `release`; raises ModelNotReady if it is still
        loading after the wait, ValidationError if there is no such artifact, ModelError if it cannot load."""
        target = target_model.decode("utf-8", "replace")
        model = self.models.get(target)
        if model is None:
            model = self.models[target] = self._new(target)
        model.users += 1
        model.last_used = time.monotonic()
        self.stats.lookups += 1
        if model.loaded and model.unloading is None:
            self.stats.hits += 1
            return model
        if model.loading is None:
            model.loading = asyncio.create_task(self._load(model))
            model.loading.add_done_callback(_retrieved)
        started = now()
        try:
            await asyncio.wait_for(asyncio.shield(model.loading), self.spec.ModelLoadWaitInSeconds)
        except TimeoutError:
            model.users -= 1
            raise ModelNotReady(
                f"Model {target} is not loaded yet: it is still being downloaded and loaded into container "
                f"{self.container} (for up to {self.spec.ModelLoadTimeoutInSeconds:g} s). Retry the request."
            ) from None
        except BaseException:
            model.users -= 1
            self._forget_if_unused(model)
            raise
        finally:
            self.stats.loading_wait.observe(now() - started)
        return model

    def _forget_if_unused(self, model: Model) -> None:
        """A model that failed to load and holds nothing (no files, no load, no request) is not kept: names
        of artifacts that do not exist must not pile up."""
        if not (
            model.loaded
            or model.users
            or model.on_disk
            or model.loading is not None
            or model.unloading is not None
        ):
            self.models.pop(model.target, None)

    def release(self, model: Model) -> None:
        """A request is done with `model`."""
        model.users -= 1
        model.last_used = time.monotonic()
        if not self.keep and model.users == 0 and model.loaded:
            self._in_background(self._unload(model, Unload.CACHE_DISABLED, "ModelCacheSetting is Disabled"))

    def lost(self, model: Model) -> None:
        """The container says it does not have `model` (it restarted, say): the next request loads it
        again."""
        if model.loaded:
            logger.warning(
                "%s: the container no longer has model %s (%s); loading it again",
                self.container,
                model.target,
                model.name,
            )
        model.loaded = False

    async def make_room(self, keep: Model, why: Unload, detail: str) -> bool:
        """Unload the least recently used idle model other than `keep`; False if there is none."""
        victim = self._least_recently_used(exclude=keep)
        return victim is not None and await self._unload(victim, why, detail)

    async def close(self) -> None:
        tasks: list[asyncio.Future[object] | asyncio.Task[None]] = [*self._background]
        tasks += [m.loading for m in self.models.values() if m.loading is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _new(self, target: str) -> Model:
        name = hashlib.sha256(target.encode()).hexdigest()[:32]
        return Model(target, name, self.cache / name)

    async def _load(self, model: Model) -> None:
        try:
            async with asyncio.timeout(self.spec.ModelLoadTimeoutInSeconds):
                if model.unloading is not None:
                    await model.unloading
                if model.url is None or (model.on_disk and not model.url.is_dir()):
                    await self._fetch(model)
                await self._within_budget(model)
                await self._load_into_container(model)
        except TimeoutError:
            logger.warning(
                "%s: gave up loading model %s after %g s",
                self.container,
                model.target,
                self.spec.ModelLoadTimeoutInSeconds,
            )
            raise ModelError(
                f"Container {self.container} did not load model {model.target} within "
                f"{self.spec.ModelLoadTimeoutInSeconds:g} s.",
                container=self.container,
            ) from None
        finally:
            model.loading = None

    async def _fetch(self, model: Model) -> None:
        """Download (if remote) and unpack the artifact into the disk cache."""
        started = now()
        try:
            url, size, downloaded = await asyncio.to_thread(self._fetch_blocking, model)
        except ArtifactMissing as exc:
            raise ValidationError(
                f"Failed to download model data for TargetModel {model.target} from {self.source.url} "
                f"({exc}). "
                "Please ensure that there is an object located at the URL."
            ) from None
        except ArtifactBroken as exc:
            raise ValidationError(
                f"Failed to extract model data for TargetModel {model.target}: {exc}."
            ) from None
        model.url, model.on_disk = url, size
        if downloaded is not None:
            self.stats.downloading.observe(downloaded)
        logger.info(
            "%s: model %s is on disk (%.1f MiB, %.0f ms)",
            self.container,
            model.target,
            size / MIB,
            (now() - started) * 1000,
        )
        await self._trim_disk(keep=model)

    def _fetch_blocking(self, model: Model) -> tuple[Path, int, float | None]:
        model.folder.mkdir(parents=True, exist_ok=True)
        try:
            started = now()
            artifact, downloaded = self.source.fetch(model.target, model.folder)
            took = now() - started if downloaded else None
            if artifact.is_dir():
                return artifact, 0, took  # a folder is loaded where it is
            unpacked = model.folder / "model"
            try:
                unpack(artifact, unpacked)
            finally:
                if downloaded:
                    artifact.unlink(missing_ok=True)
            return unpacked, folder_size(unpacked), took
        except BaseException:
            shutil.rmtree(model.folder, ignore_errors=True)  # nothing half-made stays in the cache
            raise

    async def _within_budget(self, model: Model) -> None:
        """With a memory budget: unload idle models while the container uses more than it."""
        budget = self.spec.MemoryBudgetInMiB
        if budget is None:
            return
        if self.memory is None:
            if not self._budget_unmeasured:
                self._budget_unmeasured = True
                logger.warning(
                    "%s: MemoryBudgetInMiB is measured on the container's processes, which only `mce up` "
                    "knows; "
                    "models are unloaded on 507 only",
                    self.container,
                )
            return
        while (used := self.memory()) is not None and used > budget * MIB:
            reason = f"the container uses {used / MIB:.0f} MiB, over its budget of {budget} MiB"
            if not await self.make_room(model, Unload.MEMORY_BUDGET, reason):
                logger.warning(
                    "%s: %s, and every loaded model is in use: loading %s anyway",
                    self.container,
                    reason,
                    model.target,
                )
                return
            await self._memory_freed(used)

    async def _memory_freed(self, before: int) -> None:
        """Wait (a little) for an unload to show in the container's memory: the unload call may answer
        before the model's process has exited, and measuring too soon would unload one model too many."""
        assert self.memory is not None
        deadline = time.monotonic() + MEMORY_SETTLE
        while time.monotonic() < deadline:
            used = self.memory()
            if used is None or used < before:
                return
            await asyncio.sleep(0.02)

    async def _load_into_container(self, model: Model) -> None:
        """`POST /models`; on 507 (out of memory) unload an idle model and try again, while there is one."""
        assert model.url is not None
        while True:
            started = now()
            status, body = await self.api.load_model(
                model.name, str(model.url), model.target, self.spec.ModelLoadTimeoutInSeconds
            )
            if status == 409 and model.refused:
                await self._clear_refused(model)
                continue
            if 200 <= status < 300 or status == 409:  # 409: it was loaded already (spec §4.1)
                model.loaded, model.refused = True, False
                took = now() - started
                self.stats.loading.observe(took)
                logger.info(
                    "%s: loaded model %s as %s in %.0f ms",
                    self.container,
                    model.target,
                    model.name,
                    took * 1000,
                )
                return
            model.refused = model.refused or status == 507
            if status != 507 or not await self.make_room(
                model,
                Unload.OUT_OF_MEMORY,
                f"the container answered 507 (out of memory) to loading {model.target}",
            ):
                logger.warning(
                    "%s: could not load model %s: %d %s",
                    self.container,
                    model.target,
                    status,
                    body[:200].decode("utf-8", "replace"),
                )
                raise error_status(self.container, status, body)

    async def _clear_refused(self, model: Model) -> None:
        """A container refused to load `model` (507) yet says it has it (409): Multi Model Server keeps a
        refused name registered without a worker, and only a later `DELETE` removes it (D22). Delete it
        until the container says it did, polling while it is still cleaning up itself, within 10 s."""
        deadline = time.monotonic() + REFUSED_CLEANUP
        while time.monotonic() < deadline:
            status, _ = await self.api.unload_model(model.name, model.target, REFUSED_CLEANUP)
            if 200 <= status < 300:
                model.refused = False
                logger.info(
                    "%s: removed model %s, which the container had refused but kept registered",
                    self.container,
                    model.target,
                )
                return
            await asyncio.sleep(0.05)  # the container's own cleanup of the name is still under way
        raise ModelError(
            f"Container {self.container} refused to load model {model.target} (507) and keeps it registered; "
            f"unloading it did not succeed within {REFUSED_CLEANUP:g} s.",
            container=self.container,
        )

    async def _unload(self, model: Model, why: Unload, detail: str) -> bool:
        """`DELETE /models/{name}`, if nobody is using it; with `ModelCacheSetting: Disabled` it also leaves
        the disk cache."""
        if not model.idle:
            return False
        model.unloading = asyncio.get_running_loop().create_future()
        started = now()
        try:
            status, body = await self.api.unload_model(
                model.name, model.target, self.spec.ModelLoadTimeoutInSeconds
            )
        except ModelError as exc:
            status, body = 0, exc.message.encode()
        finally:
            model.unloading.set_result(None)
            model.unloading = None
        if not (200 <= status < 300 or status == 404):  # 404: it was gone already
            logger.warning(
                "%s: unloading model %s failed: %d %s",
                self.container,
                model.target,
                status,
                body[:200].decode("utf-8", "replace"),
            )
            return False
        model.loaded = False
        took = now() - started
        self.stats.unloading.observe(took)
        self.stats.unloads[why] = self.stats.unloads.get(why, 0) + 1
        logger.info("%s: unloaded model %s in %.0f ms: %s", self.container, model.target, took * 1000, detail)
        if why is Unload.CACHE_DISABLED:
            await self._delete(model, detail)
        return True

    async def _trim_disk(self, keep: Model) -> None:
        """Delete unpacked models that are not loaded, least recently used first, while over the disk
        bound."""
        bound = self.spec.DiskCacheInMiB
        if bound is None:
            return
        total = sum(m.on_disk for m in self.models.values())
        for model in sorted(self.models.values(), key=lambda m: m.last_used):
            if total <= bound * MIB:
                return
            if model is keep or model.loaded or model.users or model.loading is not None or not model.on_disk:
                continue
            total -= model.on_disk
            await self._delete(model, f"the disk cache holds {total / MIB:.1f} MiB more than its {bound} MiB")

    async def _delete(self, model: Model, reason: str) -> None:
        if not model.on_disk:
            return
        size, model.on_disk, model.url = model.on_disk, 0, None
        await asyncio.to_thread(shutil.rmtree, model.folder, True)
        logger.info(
            "%s: deleted model %s from the disk cache (%.1f MiB): %s",
            self.container,
            model.target,
            size / MIB,
            reason,
        )

    def _least_recently_used(self, exclude: Model) -> Model | None:
        idle = [m for m in self.models.values() if m is not exclude and m.idle]
        return min(idle, key=lambda m: m.last_used) if idle else None

    def _in_background(self, work: Coroutine[None, None, object]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _retrieved(task: asyncio.Task[None]) -> None:
    """A load's failure reaches the requests that waited for it; when all of them had given up
    (ModelNotReady), nobody else needs it: mark it retrieved rather than have asyncio complain."""
    if not task.cancelled():
        task.exception()
