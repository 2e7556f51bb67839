#!/usr/bin/env bash
# The demo endpoint: sets up .venv, starts two SageMaker-contract containers (examples/containers/echo.py)
# on ports 9001 and 9002, puts the gateway in front of them on 8080 (examples/echo-direct.yaml), invokes
# it once with boto3, and keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
py=.venv/bin/python
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
SAGEMAKER_BIND_TO_PORT=9001 "$py" examples/containers/echo.py english & pids+=($!)
SAGEMAKER_BIND_TO_PORT=9002 "$py" examples/containers/echo.py french & pids+=($!)
.venv/bin/mce serve examples/echo-direct.yaml --port 8080 & pids+=($!)
# Wait (at most 30 s) until the gateway reports every container healthy.
"$py" - <<'PY'
import time, urllib.request, urllib.error
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8080/ping", timeout=2) as r:
            if r.status == 200:
                break
    except (urllib.error.URLError, OSError):
        pass
    if time.monotonic() > deadline:
        raise SystemExit("the demo endpoint did not become healthy within 30 s")
    time.sleep(0.2)
PY
"$py" examples/invoke_echo.py http://127.0.0.1:8080
echo
echo "Endpoint echo-direct is serving on http://127.0.0.1:8080 (Ctrl-C stops it). Try:"
echo "  curl -s -H 'X-Amzn-SageMaker-Target-Container-Hostname: french' -d '{\"x\": 1}' http://127.0.0.1:8080/endpoints/echo-direct/invocations"
wait
