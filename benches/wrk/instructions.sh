#!/usr/bin/env bash
# Instructions per request under callgrind: deterministic for a given binary and input, so two
# builds can be compared on a noisy machine where req/s cannot (the README's tables and the
# closing notes quote these). One worker, an nginx origin answering /api/ping with 200 B of JSON,
# `h2load --h1 -c16`: 2,000 requests of warm-up, then the counters are zeroed and REQUESTS more
# are counted. `tls` and `h2` proxy /api/ping over HTTPS (TLS 1.3, P-256 certificate), HTTP/1.1
# (`h2load --h1 -c16`) and HTTP/2 (`h2load -c16 -m4`, the referee's h2 row); their count
# includes the 16 connections' handshakes.
#   benches/wrk/instructions.sh target/release/orta-gateway [ping|index|both|tls|h2|all]
# KEEP=DIR keeps each profile there (callgrind_annotate reads it).
# Needs (Debian): valgrind nginx nghttp2-client curl bc python3 openssl.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$(realpath "${1:?usage: instructions.sh BINARY [ping|index|both|tls|h2|all]}")
which=${2:-both}
requests=${REQUESTS:-20000}
for tool in valgrind callgrind_control nginx h2load curl bc python3 openssl; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing: apt-get install valgrind nginx nghttp2-client curl bc python3 openssl" >&2; exit 1; }
done
work=$(mktemp -d /tmp/orta-instructions.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
origin=$(free_port) http=$(free_port) https=$(free_port)
self_signed_cert "$work"
mkdir -p "$work/www" "$work/nginx"
head -c 2048 /dev/urandom | base64 -w 76 | head -c 2048 > "$work/www/index.html"
cat > "$work/nginx/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log $work/nginx/error.log; pid $work/nginx/pid;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$origin; location /api/ { default_type application/json;
    return 200 '{"status":"ok","service":"orta-bench","items":[1,2,3,4,5,6,7,8,9,10],"note":"a two hundred byte answer for the proxy benchmarks, padded to size: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'; } } }
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)
cat > "$work/gateway.toml" <<CONF
[server]
http = "127.0.0.1:$http"
https = "127.0.0.1:$https"
redirect_to_https = false
workers = 1
[tls]
source = "files"
cert = "$work/cert.pem"
key = "$work/key.pem"
[headers]
strict_transport_security = ""
x_content_type_options = ""
x_frame_options = ""
referrer_policy = ""
content_security_policy = ""
permissions_policy = ""
[compression]
algorithms = []
[[upstream]]
name = "backend"
servers = ["127.0.0.1:$origin"]
[[route]]
path = "/api/"
upstream = "backend"
[[route]]
path = "/"
root = "$work/www"
index = "index.html"
[log]
level = "warn"
access = "off"
CONF
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$bin" run --config "$work/gateway.toml" 2>"$work/valgrind.log" & pids+=($!)
gw=$!
up=0
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$http/api/ping" >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
[ "$up" = 1 ] || { echo "instructions.sh: the gateway did not answer within 60 s under valgrind:" >&2; cat "$work/valgrind.log" >&2; exit 1; }
measure() {
  local path=$1 url="http://127.0.0.1:$http$1" load=(--h1 -c16) name=$1
  case "${2:-}" in
    tls) url="https://127.0.0.1:$https$path" name="tls $path" ;;
    h2) url="https://127.0.0.1:$https$path" load=(-c16 -m4) name="h2 $path" ;;
  esac
  h2load "${load[@]}" -n 2000 "$url" >/dev/null
  callgrind_control --zero "$gw" >/dev/null
  h2load "${load[@]}" -n "$requests" "$url" | grep -E "^requests:" >&2
  rm -f "$work"/cg.out.*
  callgrind_control --dump "$gw" >/dev/null
  local ir
  ir=$(cat "$work"/cg.out.* 2>/dev/null | awk '/^summary:/ {s+=$2} /^totals:/ {t+=$2} END {print (s>0?s:t)}')
  printf '%-14s %8.0f instructions per request\n' "$name" "$(echo "$ir / $requests" | bc -l)"
  # KEEP=DIR keeps the profile, for callgrind_annotate
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cat "$work"/cg.out.* > "$KEEP/callgrind${2:+_$2}${path//\//_}.out"; fi
}
case "$which" in
  ping) measure /api/ping ;;
  index) measure /index.html ;;
  tls) measure /api/ping tls ;;
  h2) measure /api/ping h2 ;;
  all) measure /api/ping; measure /index.html; measure /api/ping tls; measure /api/ping h2 ;;
  *) measure /api/ping; measure /index.html ;;
esac
