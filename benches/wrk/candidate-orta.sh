#!/usr/bin/env bash
# orta-gateway as a candidate of ../shared/bench/bench.sh, configured from its BENCH_* variables
# like the reference servers: no security headers, no rate limit, gzip only (level 1 on the
# fly), access log off, no redirect, round robin over BENCH_UPSTREAMS with health checks,
# static files from BENCH_STATIC_ROOT, the harness's certificate, BENCH_WORKERS threads.
set -euo pipefail
: "${BENCH_HTTP_PORT:?} ${BENCH_HTTPS_PORT:?} ${BENCH_UPSTREAMS:?} ${BENCH_STATIC_ROOT:?}"
: "${BENCH_CERT:?} ${BENCH_KEY:?} ${BENCH_RUN_DIR:?} ${BENCH_ADMIN_PORT:?} ${BENCH_WORKERS:=1}"
bin="${ORTA_BIN:?set ORTA_BIN to the release binary}"
servers=$(printf '"%s", ' ${BENCH_UPSTREAMS//,/ } | sed 's/, $//')
# ORTA_RATE_LIMIT=1: /api/ behind a zone that never trips (measures the limiter's cost)
route_limit="" zone=""
if [ -n "${ORTA_RATE_LIMIT:-}" ]; then
  route_limit='rate_limit = "bench"'
  zone=$'[[rate_limit]]\nname = "bench"\nrate = "1000000/s"\nburst = 1000000'
fi
# ORTA_CACHE=1: /api/ answers kept in a proxy cache zone for 10 s (microcaching), as
# candidate-nginx-cache.sh does with proxy_cache
route_cache="" cache_zone=""
if [ -n "${ORTA_CACHE:-}" ]; then
  route_cache='cache = { zone = "bench", ttl = "10s", stale_while_revalidate = "10s", stale_if_error = "1h" }'
  cache_zone=$'[[cache_zone]]\nname = "bench"\nmax_size = "64MiB"\nmax_object_size = "1MiB"'
fi
# the gateway refuses private keys others can read
cp "$BENCH_KEY" "$BENCH_RUN_DIR/key.pem" && chmod 600 "$BENCH_RUN_DIR/key.pem"
cat >"$BENCH_RUN_DIR/gateway.toml" <<CONF
[server]
http  = "127.0.0.1:$BENCH_HTTP_PORT"
https = "127.0.0.1:$BENCH_HTTPS_PORT"
redirect_to_https = false
workers = $BENCH_WORKERS
max_connections = 100000
max_connections_per_ip = 100000

[tls]
source = "files"
cert = "$BENCH_CERT"
key  = "$BENCH_RUN_DIR/key.pem"

[headers]
strict_transport_security = ""
x_content_type_options = ""
x_frame_options = ""
referrer_policy = ""
content_security_policy = ""
permissions_policy = ""

[compression]
algorithms = ["gzip"]
min_size = 512
types = ["text/*", "application/json", "application/javascript", "application/xml", "image/svg+xml"]

[[upstream]]
name = "backend"
servers = [$servers]
balance = "round_robin"
  [upstream.health]
  path = "/api/health"
  interval = "5s"

[[route]]
path = "/api/"
upstream = "backend"
$route_limit
$route_cache

[[route]]
path = "/"
root = "$BENCH_STATIC_ROOT"
index = "index.html"

$zone
$cache_zone

[log]
level = "warn"
access = "off"

[admin]
listen = "127.0.0.1:$BENCH_ADMIN_PORT"
CONF
"$bin" check --config "$BENCH_RUN_DIR/gateway.toml" >&2
exec "$bin" run --config "$BENCH_RUN_DIR/gateway.toml"
