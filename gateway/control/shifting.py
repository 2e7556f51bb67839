"""How UpdateEndpoint moves traffic from the old fleet to the new: a DeploymentConfig read into steps.

SageMaker's blue/green update (botocore's BlueGreenUpdatePolicy, TrafficRoutingConfig): the new fleet
starts beside the old; then `ALL_AT_ONCE` moves every request to it, `CANARY` first `CanarySize` of them
and the rest after `WaitIntervalInSeconds`, `LINEAR` `LinearStepSize` more every `WaitIntervalInSeconds`.
After the last step the old fleet is kept `WaitIntervalInSeconds` (the baking period) and then
`TerminationWaitInSeconds` more before it stops; the whole update must end within
`MaximumExecutionTimeoutInSeconds`, or it is rolled back. A `RollingUpdatePolicy` moves `MaximumBatchSize`
at a time, every `WaitIntervalInSeconds`. A size is a share of the variant's capacity: `CAPACITY_PERCENT`,
or `INSTANCE_COUNT` over the variants' InitialInstanceCount (locally one replica serves them all, but the
requests move as if there were that many). `AutoRollbackConfiguration` watches CloudWatch alarms, which
do not exist here: it is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidRequest


@dataclass(frozen=True)
class Shift:
    """The steps of one update: (share of requests the new fleet gets, seconds before the next step)."""

    steps: list[tuple[float, float]] = field(default_factory=lambda: [(1.0, 0.0)])
    keep_old: float = 0.0  # seconds the old fleet stays after the last step (baking, termination wait)
    deadline: float | None = None  # MaximumExecutionTimeoutInSeconds

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, instances: int) -> Shift:
        """The shift a DeploymentConfig asks for, over a fleet of `instances`; InvalidRequest for what
        SageMaker refuses, or what cannot be had here."""
        if not config:
            return cls()
        if config.get("AutoRollbackConfiguration"):
            raise InvalidRequest(
                "DeploymentConfig.AutoRollbackConfiguration names CloudWatch alarms, which the local "
                "SageMaker does not have: remove it (the update is still rolled back if its containers "
                "never get healthy, or past MaximumExecutionTimeoutInSeconds)."
            )
        blue_green, rolling = config.get("BlueGreenUpdatePolicy"), config.get("RollingUpdatePolicy")
        if blue_green is not None and rolling is not None:
            raise InvalidRequest(
                "DeploymentConfig takes BlueGreenUpdatePolicy or RollingUpdatePolicy, not both."
            )
        if rolling is not None:
            wait = float(rolling["WaitIntervalInSeconds"])
            batch = _share(rolling["MaximumBatchSize"], instances, "RollingUpdatePolicy.MaximumBatchSize")
            if not 0.05 <= batch <= 0.5:
                raise InvalidRequest(
                    "RollingUpdatePolicy.MaximumBatchSize must be between 5% and 50% of the variant's total "
                    f"instance count ({instances})."
                )
            return cls._checked(_linear(batch, wait), 0.0, rolling.get("MaximumExecutionTimeoutInSeconds"))
        if blue_green is None:
            return cls()
        routing = blue_green["TrafficRoutingConfiguration"]
        wait = float(routing["WaitIntervalInSeconds"])
        kind = routing["Type"]
        if kind == "CANARY":
            if "CanarySize" not in routing:
                raise InvalidRequest("TrafficRoutingConfiguration of Type CANARY needs CanarySize.")
            canary = _share(routing["CanarySize"], instances, "CanarySize")
            if canary > 0.5:
                raise InvalidRequest(
                    "CanarySize must be less than or equal to 50% of the variant's total instance count "
                    f"({instances})."
                )
            steps = [(canary, wait), (1.0, 0.0)]
        elif kind == "LINEAR":
            if "LinearStepSize" not in routing:
                raise InvalidRequest("TrafficRoutingConfiguration of Type LINEAR needs LinearStepSize.")
            steps = _linear(_share(routing["LinearStepSize"], instances, "LinearStepSize"), wait)
        else:  # ALL_AT_ONCE
            steps = [(1.0, 0.0)]
        keep = wait + float(blue_green.get("TerminationWaitInSeconds", 0))
        return cls._checked(steps, keep, blue_green.get("MaximumExecutionTimeoutInSeconds"))

    @classmethod
    def _checked(cls, steps: list[tuple[float, float]], keep: float, deadline: int | None) -> Shift:
        waiting = sum(wait for _, wait in steps) + keep
        if deadline is not None and deadline <= waiting:
            raise InvalidRequest(
                f"MaximumExecutionTimeoutInSeconds ({deadline}) must be larger than the total waiting time "
                f"of the update ({waiting:g} s of WaitIntervalInSeconds and TerminationWaitInSeconds)."
            )
        return cls(steps, keep, float(deadline) if deadline is not None else None)


def _share(size: dict[str, Any], instances: int, what: str) -> float:
    value = int(size["Value"])
    if size["Type"] == "CAPACITY_PERCENT":
        if value > 100:
            raise InvalidRequest(f"{what}: a CAPACITY_PERCENT is at most 100.")
        return value / 100
    if value > instances:
        raise InvalidRequest(f"{what}: {value} instances, of {instances}.")
    return value / instances


def _linear(step: float, wait: float) -> list[tuple[float, float]]:
    count = math.ceil(1 / step - 1e-9)
    return [(min(1.0, step * (i + 1)), wait if i + 1 < count else 0.0) for i in range(count)]
