"""A minimal SageMaker-contract container: it answers a JSON object naming itself and echoing the request."""

from __future__ import annotations

import json
import sys

from contract import BadRequest, serve


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "echo"

    def echo(body: bytes, content_type: str) -> tuple[bytes, str]:
        try:
            request = json.loads(body or b"null")
        except ValueError:
            raise BadRequest("expected a JSON body") from None
        return json.dumps({"container": name, "request": request}).encode(), "application/json"

    serve(name, echo)


if __name__ == "__main__":
    main()
