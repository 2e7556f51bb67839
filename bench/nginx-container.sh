#!/bin/sh
# A SageMaker-contract container made of nginx, for bench/local_sagemaker.py: GET /ping and POST
# /invocations answer 200 with a small JSON body on SAGEMAKER_BIND_TO_PORT; it costs almost nothing, so
# what a benchmark sees is the gateway. Files go under MCE_RUN_DIR (mce up sets it). exec: SIGTERM
# reaches nginx's master, which stops its worker.
set -eu
dir="${MCE_RUN_DIR:-/tmp/nginx-container}"
mkdir -p "$dir"
chmod 755 "$dir"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${SAGEMAKER_BIND_TO_PORT:-8080};
    location / { return 200 '{"predictions": [[0.1, 0.9]]}'; }
  }
}
CONF
exec nginx -c "$dir/nginx.conf" -p "$dir"
