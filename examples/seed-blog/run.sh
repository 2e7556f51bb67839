#!/usr/bin/env bash
# The seed blog's flow against a local SageMaker, from a fresh clone: sets up .venv, builds the two models,
# then run.py (a local S3 server, `mce up`, deploy.py with plain boto3, everything stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash .ci/setup
.venv/bin/python examples/seed-blog/build_models.py
exec .venv/bin/python examples/seed-blog/run.py
