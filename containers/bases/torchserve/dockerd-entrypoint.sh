#!/bin/sh
# The stand-in's entrypoint: `serve [ARGS]` runs TorchServe in the foreground with the image's
# config.properties, as the official image's entrypoint does; any other command runs as given.
set -e
if [ "${1:-}" = serve ]; then
  shift
  exec torchserve --foreground --ts-config /home/model-server/config.properties "$@"
fi
exec "$@"
