"""The generic SageMaker container contract: `GET /ping` answers 200, `POST /invocations` infers (spec §5).

Any container that honours the contract (the SageMaker inference toolkit, MMS, TorchServe's and TF
Serving's SageMaker images, a hand-written server) is reached this way; it needs nothing beyond the
shared HTTP machinery.
"""

from __future__ import annotations

from gateway.backends.http import SingleExchangeBackend


class SageMakerBackend(SingleExchangeBackend):
    """`POST /invocations`, health from `GET /ping`."""
