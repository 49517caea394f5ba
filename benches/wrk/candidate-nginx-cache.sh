#!/usr/bin/env bash
# nginx with a 10 s proxy_cache on /api/ (microcaching, request coalescing, stale answers while
# updating or on errors), as a candidate of ../shared/bench/bench.sh: the counterpart of
# `ORTA_CACHE=1 candidate-orta.sh`. Otherwise configured like the harness's reference nginx:
# gzip level BENCH_GZIP_LEVEL on the fly (nginx keeps no compressed copy of a cached answer),
# keep-alive pool to the origins, no logs.
#   CANDIDATE_CMD="bash $PWD/benches/wrk/candidate-nginx-cache.sh" CANDIDATE_NAME=nginx-cache \
#     SERVERS=nginx SCENARIOS=catalog_gz bash ../shared/bench/bench.sh
set -euo pipefail
: "${BENCH_HTTP_PORT:?} ${BENCH_HTTPS_PORT:?} ${BENCH_UPSTREAMS:?} ${BENCH_STATIC_ROOT:?}"
: "${BENCH_CERT:?} ${BENCH_KEY:?} ${BENCH_RUN_DIR:?} ${BENCH_WORKERS:=1} ${BENCH_GZIP_LEVEL:=1}"
run="$BENCH_RUN_DIR"
mkdir -p "$run/tmp" "$run/cache"
upstreams=""
for origin in ${BENCH_UPSTREAMS//,/ }; do
  upstreams+="    server $origin;"$'\n'
done
as_root=""
[ "$(id -u)" = 0 ] && as_root="user root root;"
files=$(ulimit -n)
cat >"$run/nginx.conf" <<CONF
$as_root
daemon off;
worker_processes $BENCH_WORKERS;
worker_rlimit_nofile $files;
pid $run/nginx.pid;
error_log $run/error.log warn;
events { worker_connections $((files / 2)); }
http {
  types { application/json json; text/html html; text/css css; image/jpeg jpg; text/plain txt; }
  default_type application/octet-stream;
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 75s; keepalive_requests 10000000;
  open_file_cache max=10000 inactive=60s; open_file_cache_valid 60s;
  gzip on; gzip_comp_level $BENCH_GZIP_LEVEL; gzip_min_length 512; gzip_proxied any; gzip_vary on;
  gzip_types text/plain text/css application/json application/javascript application/xml image/svg+xml;
  client_body_temp_path $run/tmp/body; proxy_temp_path $run/tmp/proxy;
  fastcgi_temp_path $run/tmp/fcgi; uwsgi_temp_path $run/tmp/uwsgi; scgi_temp_path $run/tmp/scgi;
  ssl_protocols TLSv1.2 TLSv1.3;
  proxy_cache_path $run/cache levels=1:2 keys_zone=bench:10m max_size=64m inactive=60s use_temp_path=off;
  upstream origins {
$upstreams    keepalive 128; keepalive_requests 10000000; keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$BENCH_HTTP_PORT backlog=4096;
    listen 127.0.0.1:$BENCH_HTTPS_PORT ssl http2 backlog=4096;
    ssl_certificate $BENCH_CERT; ssl_certificate_key $BENCH_KEY;
    location /api/ {
      proxy_cache bench;
      proxy_cache_valid 200 203 204 301 404 410 10s;
      proxy_cache_lock on;
      proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
      proxy_cache_background_update on;
      proxy_pass http://origins;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
    location / { root $BENCH_STATIC_ROOT; }
  }
}
CONF
exec nginx -p "$run/" -e "$run/error.log" -c "$run/nginx.conf"
