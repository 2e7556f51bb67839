"""One endpoint as the front door serves it: its data plane (containers, router) and its telemetry.

The composition root (gateway.app) makes one per endpoint; a request cycle (gateway.cycle) is handed the
one its request names.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dataplane import DataPlane
from gateway.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class Service:
    dataplane: DataPlane
    telemetry: Telemetry
