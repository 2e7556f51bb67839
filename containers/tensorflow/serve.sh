#!/bin/sh
# The TensorFlow container's entrypoint: TF Serving on the ports SageMaker hands out. Docker and native alike.
#
#   SAGEMAKER_BIND_TO_PORT     TF Serving's REST API (default 8080)
#   SAGEMAKER_SAFE_PORT_RANGE  its first port: TF Serving's gRPC API (default 8500)
#   MCE_MODEL_DIR              holds <model>/<version>/saved_model.pb (default /opt/ml/model)
#   MCE_MODEL_NAME             the model's name (default mnist)
#   MCE_BIND_ADDRESS           the stand-in's listen address (default 0.0.0.0; native launch: 127.0.0.1)
#
# Runs tensorflow_model_server when it is on PATH (the official tensorflow/serving image); otherwise the
# local stand-in, standin.py, with $MCE_PYTHON (default python3), which needs tensorflow-cpu and
# tensorflow-serving-api. exec: the server is this process, so SIGTERM reaches it directly.
set -eu
rest_port="${SAGEMAKER_BIND_TO_PORT:-8080}"
if [ -n "${SAGEMAKER_SAFE_PORT_RANGE:-}" ]; then
  grpc_port="${SAGEMAKER_SAFE_PORT_RANGE%%-*}"
else
  grpc_port=8500
fi
model_name="${MCE_MODEL_NAME:-mnist}"
model_dir="${MCE_MODEL_DIR:-/opt/ml/model}"
if [ ! -d "$model_dir/$model_name" ]; then
  echo "serve.sh: no model directory $model_dir/$model_name (MCE_MODEL_DIR, MCE_MODEL_NAME); build it with containers/tensorflow/build" >&2
  exit 2
fi
if command -v tensorflow_model_server >/dev/null 2>&1; then
  exec tensorflow_model_server --port="$grpc_port" --rest_api_port="$rest_port" \
    --model_name="$model_name" --model_base_path="$model_dir/$model_name"
fi
exec "${MCE_PYTHON:-python3}" "$(dirname "$0")/standin.py" --model-name "$model_name" \
  --model-base-path "$model_dir/$model_name" --rest-port "$rest_port" --grpc-port "$grpc_port" \
  --host "${MCE_BIND_ADDRESS:-0.0.0.0}"
