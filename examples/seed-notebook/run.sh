#!/usr/bin/env bash
# The seed notebook's multi-model flow against a local SageMaker, from a fresh clone: sets up .venv, builds
# the models, then run.py (a local S3 server, `mce up`, deploy.py with plain boto3, all stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash .ci/setup
.venv/bin/python containers/multi-model/build_model.py
exec .venv/bin/python examples/seed-notebook/run.py
