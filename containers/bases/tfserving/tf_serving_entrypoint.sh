#!/bin/sh
# The stand-in's entrypoint: TF Serving's default ports, and the model named by MODEL_NAME under
# MODEL_BASE_PATH, as the official image's entrypoint serves them; extra arguments go to the server.
exec tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name="${MODEL_NAME}" \
  --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
