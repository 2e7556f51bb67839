"""The multi-model image's entrypoint: `serve` starts MMS the SageMaker way, anything else is run as a
command.

Inside a container the address is the container's own, so sagemaker-inference's `start_model_server` fits:
with `SAGEMAKER_MULTI_MODEL=true` it writes MMS's config from its multi-model template (`model_store=/`,
one worker per model), serves inference and model management both on `SAGEMAKER_BIND_TO_PORT` (default
8080) on 0.0.0.0, starts no model, and forwards SIGTERM to java. The handler module, `model_handler`, is
found on PYTHONPATH (the Dockerfile sets it). Outside Docker use serve.py instead: it binds loopback and
stops the python workers that java leaves behind.
"""

from __future__ import annotations

import os
import sys

HANDLER = "model_handler:handle"


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        from sagemaker_inference import model_server  # reads SAGEMAKER_MULTI_MODEL at import

        model_server.start_model_server(handler_service=HANDLER)
        return 0
    if not argv:
        print("usage: dockerd-entrypoint.py serve | COMMAND [ARG...]", file=sys.stderr)
        return 2
    os.execvp(argv[0], argv)  # e.g. `docker run IMAGE bash`; does not return
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
