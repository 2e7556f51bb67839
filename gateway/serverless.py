"""A serverless variant (ProductionVariant.ServerlessConfig) as the front door serves it: at most
`MaxConcurrency` invocations at once (one more is refused with ThrottlingException), and no containers
while it has nothing to do: `idle` seconds after its last invocation ends they are stopped, and the next
invocation waits while they start again (a cold start). `ProvisionedConcurrency` keeps them running.

The front door asks `admit` for each invocation (a count and a comparison); a cycle that finds the variant
cold awaits `ready` before its first send, and every admitted cycle calls `release` when it ends, however
it ends. Starting and stopping the containers is the deployment's (gateway.launch.deployment), handed in
as two callables, so nothing here knows a process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError, ServiceUnavailable, Throttled

logger = logging.getLogger(__name__)

IDLE_SECONDS = 300.0  # mce up --serverless-idle: how long a serverless variant stays warm with nothing to do


@dataclass(frozen=True, slots=True)
class ServerlessConfig:
    memory_mb: int
    max_concurrency: int
    provisioned: int | None

    @classmethod
    def from_variant(cls, config: dict[str, Any]) -> ServerlessConfig:
        return cls(
            int(config["MemorySizeInMB"]),
            int(config["MaxConcurrency"]),
            int(config["ProvisionedConcurrency"]) if config.get("ProvisionedConcurrency") else None,
        )


class Serverless:
    """One serverless variant's capacity: the invocations running on it, and whether its containers are."""

    def __init__(
        self,
        config: ServerlessConfig,
        name: str,
        *,
        wake: Callable[[], Awaitable[None]],
        sleep: Callable[[], Awaitable[None]],
        idle: float = IDLE_SECONDS,
    ) -> None:
        """`wake`: start the containers and wait until they are healthy (raises if they do not get so);
        `sleep`: stop them; `idle`: seconds without an invocation before `sleep` (0: never)."""
        self.config = config
        self.name = name
        self.idle = idle if config.provisioned is None else 0.0
        self.warm = True  # a variant's containers are started with it
        self.in_flight = 0
        self.throttled = 0
        self.cold_starts = 0
        self._wake = wake
        self._sleep = sleep
        self._timer: asyncio.TimerHandle | None = None
        self._turning: asyncio.Lock | None = None
        self._sleeping: asyncio.Task[None] | None = None

    # on the request path
    def admit(self) -> GatewayError | None:
        """Count one more invocation, or the refusal when MaxConcurrency are running."""
        if self.in_flight >= self.config.max_concurrency:
            self.throttled += 1
            return Throttled(
                f"The serverless variant {self.name} is already answering its MaxConcurrency of "
                f"{self.config.max_concurrency} invocations; try again."
            )
        self.in_flight += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return None

    def arm(self) -> None:
        """The containers have just started with the variant: with no invocation, they stop after `idle`."""
        if self.in_flight == 0 and self.idle > 0 and self.warm and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.idle, self._fall_asleep)

    def release(self) -> None:
        """An admitted invocation has ended (answered, failed or abandoned)."""
        self.in_flight -= 1
        if self.in_flight == 0 and self.idle > 0 and self.warm:
            self._timer = asyncio.get_running_loop().call_later(self.idle, self._fall_asleep)

    async def ready(self) -> None:
        """Until the containers run: a cold start when they do not. ServiceUnavailable if they cannot."""
        async with self._lock():
            if self.warm:
                return
            self.cold_starts += 1
            logger.info("%s: cold start", self.name)
            try:
                await self._wake()
            except Exception as exc:
                raise ServiceUnavailable(
                    f"The serverless variant {self.name} could not start its containers: {exc}"
                ) from None
            self.warm = True

    # off it
    def _fall_asleep(self) -> None:
        self._timer = None
        if self.in_flight == 0 and self._sleeping is None:
            self._sleeping = asyncio.get_running_loop().create_task(self._go_cold())

    async def _go_cold(self) -> None:
        try:
            async with self._lock():
                if self.in_flight or not self.warm:
                    return
                self.warm = False  # from now on an invocation waits in `ready`
                logger.info("%s: idle for %g s: containers stopped", self.name, self.idle)
                await self._sleep()
        finally:
            self._sleeping = None

    def _lock(self) -> asyncio.Lock:
        if self._turning is None:
            self._turning = asyncio.Lock()
        return self._turning

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sleeping is not None:
            self._sleeping.cancel()
            await asyncio.gather(self._sleeping, return_exceptions=True)
