#!/usr/bin/env bash
# The demo endpoint, from a fresh clone: sets up .venv (dependencies included), then `mce up` on the seed
# scenario, examples/mnist-direct.yaml: a TensorFlow model (TF Serving), a PyTorch model (TorchServe) and
# a Triton model repository (Triton Inference Server) behind one Direct-mode endpoint on
# http://127.0.0.1:8080. The models are built on first start.
# Invoke it from another terminal with: .venv/bin/python examples/invoke.py. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
exec .venv/bin/mce up examples/mnist-direct.yaml "$@"
