#!/usr/bin/env bash
# The release binary built with profile-guided optimisation (PGO): an instrumented build serves a
# short training load, LLVM merges what it counted, and the release build is made again with
# those counts, so that hot code is laid out together and cold code out of the way. The result
# is the same program as `cargo build --release` (same sources, same profile, same tests), with
# fewer instructions and instruction-cache misses per request (see the README's "Performance").
#   benches/wrk/pgo.sh                 # prints the path of the binary: target/pgo/release/orta-gateway
#   TRAIN_SECONDS=4 benches/wrk/pgo.sh # seconds per training scenario (default 2)
# The training runs the gateway on loopback against two replicas of the bundled API, with the
# bench-like config (no security headers, no access log, gzip) and the production-like one
# (security headers, access log, rate limit, brotli and gzip): HTTP/1.1 and HTTPS proxying,
# compressed proxying, static files small and large, compressed static files, HTTP/2, and new
# TLS connections.
# Needs: wrk, h2load and curl (Debian: apt-get install wrk nghttp2-client curl), and an
# llvm-profdata of rustc's LLVM version (Debian: apt-get install llvm-NN, where NN is the major
# of `rustc -vV`'s "LLVM version"; or `rustup component add llvm-tools`).
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
cd "$(dirname "$0")/../.."
repo=$PWD
seconds="${TRAIN_SECONDS:-2}"
base_port="${PGO_PORT_BASE:-28740}"
say() { echo "pgo.sh: $*" >&2; }
trap 'say "failed at line $LINENO"' ERR

for tool in wrk h2load curl; do
  command -v "$tool" >/dev/null || { say "$tool is missing: apt-get install wrk nghttp2-client curl"; exit 1; }
done
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=""
for candidate in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" "llvm-profdata-$llvm" llvm-profdata; do
  if command -v "$candidate" >/dev/null && "$candidate" --version 2>/dev/null | grep -q "LLVM version $llvm\."; then
    profdata=$candidate
    break
  fi
done
[ -n "$profdata" ] || { say "no llvm-profdata of LLVM $llvm (rustc's): apt-get install llvm-$llvm, or rustup component add llvm-tools"; exit 1; }
for p in $(seq "$base_port" $((base_port + 5))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    say "port $p is taken (set PGO_PORT_BASE to a free range of 6 ports)"
    exit 1
  fi
done

gen="$repo/target/pgo-gen" use="$repo/target/pgo"
train="$gen/train"
rm -rf "$train"
mkdir -p "$train/raw" "$train/www/static" "$train/www/small" "$train/logs"

say "1/4 instrumented build (target/pgo-gen)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$train/raw" \
  cargo build --release --locked --target-dir "$gen" >&2
bin="$gen/release/orta-gateway"

say "2/4 training (${seconds}s per scenario)"
# the demo site's shapes: a 2 KB page, a 30 KB stylesheet, a 200 KB photo, 200 small files
# (written whole, then cut: a `| head -c` would end the writer with SIGPIPE, a failure here)
head -c 1500 /dev/urandom | base64 -w 76 | sed 's/^/<p>/; s/$/<\/p>/' >"$train/www/index.html"
truncate -s 2048 "$train/www/index.html"
for i in $(seq 0 799); do
  printf '.gown-%d { margin: %dpx %dpx; color: #%06x; }\n' "$i" $((i % 17)) $((i % 11)) $((i * 7919 % 16777216))
done >"$train/www/static/app.css"
truncate -s 30720 "$train/www/static/app.css"
head -c 204800 /dev/urandom >"$train/www/photo.jpg"
for i in $(seq -w 0 199); do head -c 1024 /dev/urandom | base64 >"$train/www/small/f$i.txt"; done
: >"$train/uris.txt"
http=$base_port https=$((base_port + 1)) admin=$((base_port + 2)) api1=$((base_port + 3)) api2=$((base_port + 4))
for i in $(seq -w 0 199); do echo "http://127.0.0.1:$http/small/f$i.txt" >>"$train/uris.txt"; done

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
# stops a process the way an operator does (SIGTERM), so that it writes its counts on exit
stop() {
  kill -TERM "$1"
  wait "$1" || { say "a training process did not exit cleanly (logs in $train/logs)"; exit 1; }
}
ready() {
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  say "$1 did not answer (logs in $train/logs)"
  exit 1
}
run() { "$@" >>"$train/logs/load.log" 2>&1 || { say "training load failed: $*"; exit 1; }; }

"$bin" api --listen "127.0.0.1:$api1" --database "$train/api.db" >"$train/logs/api1.log" 2>&1 &
replica1=$!
"$bin" api --listen "127.0.0.1:$api2" --database "$train/api.db" >"$train/logs/api2.log" 2>&1 &
replica2=$!
pids+=("$replica1" "$replica2")
ready "http://127.0.0.1:$api1/api/health"
ready "http://127.0.0.1:$api2/api/health"

# $1: lean (the bench's shape) or full (the shipped config's shape)
config() {
  cat <<CONF
[server]
http = "127.0.0.1:$http"
https = "127.0.0.1:$https"
redirect_to_https = false
workers = 1
max_connections_per_ip = 100000
[tls]
source = "self-signed"
self_signed_dir = "$train/certs"
[admin]
listen = "127.0.0.1:$admin"
[[upstream]]
name = "backend"
servers = ["127.0.0.1:$api1", "127.0.0.1:$api2"]
  [upstream.health]
  path = "/api/health"
  interval = "1s"
[[route]]
path = "/api/"
upstream = "backend"
CONF
  if [ "$1" = full ]; then
    cat <<CONF
rate_limit = "api"
[[rate_limit]]
name = "api"
rate = "1000000/s"
burst = 1000000
[[route]]
path = "/static/"
root = "$train/www/static"
cache_control = "public, max-age=2592000, immutable"
[[route]]
path = "/"
root = "$train/www"
index = "index.html"
[compression]
algorithms = ["br", "gzip"]
[log]
access = "$train/logs/access.log"
CONF
  else
    cat <<CONF
[[route]]
path = "/"
root = "$train/www"
index = "index.html"
[compression]
algorithms = ["gzip"]
min_size = 512
[headers]
strict_transport_security = ""
x_content_type_options = ""
x_frame_options = ""
referrer_policy = ""
content_security_policy = ""
permissions_policy = ""
[log]
access = "off"
CONF
  fi
}

h="http://127.0.0.1:$http" s="https://127.0.0.1:$https"
for shape in lean full; do
  config "$shape" >"$train/$shape.toml"
  "$bin" run --config "$train/$shape.toml" >"$train/logs/$shape.log" 2>&1 &
  gw=$!
  pids+=("$gw")
  ready "http://127.0.0.1:$admin/healthz"
  ready "$h/api/health"
  enc=gzip
  [ "$shape" = full ] && enc="br, gzip"
  # the first request of a compressible file compresses it (brotli at its best setting takes
  # a second in the instrumented build): before the load, not inside its few seconds
  for path in /index.html /static/app.css /photo.jpg; do run curl -fsS -o /dev/null -H "Accept-Encoding: $enc" "$h$path"; done
  run wrk -t1 -c64 -d"$seconds" "$h/api/health"
  run wrk -t1 -c64 -d"$seconds" -H "Accept-Encoding: $enc" "$h/api/dresses"
  run wrk -t1 -c64 -d"$seconds" "$h/index.html"
  run wrk -t1 -c64 -d"$seconds" -H "Accept-Encoding: $enc" "$h/static/app.css"
  run wrk -t1 -c64 -d"$seconds" "$h/photo.jpg"
  run h2load --h1 -D "$seconds" -c 64 -i "$train/uris.txt"
  run wrk -t1 -c64 -d"$seconds" "$s/api/health"
  run h2load -D "$seconds" -c 64 -m 4 "$s/api/health"
  run h2load -D "$seconds" -c 16 -m 4 "$s/index.html"
  run wrk -t1 -c64 -d"$seconds" -H "Connection: close" "$s/api/health"
  stop "$gw"
  pids=("$replica1" "$replica2")
done
stop "$replica1"
stop "$replica2"
pids=()
grep -h -E "^(Requests/sec|requests:)" "$train/logs/load.log" | sed 's/^/pgo.sh:   /' >&2

say "3/4 merging the counts"
"$profdata" merge -o "$train/merged.profdata" "$train/raw"

say "4/4 release build with the counts (target/pgo)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$train/merged.profdata" \
  cargo build --release --locked --target-dir "$use" >&2
echo "$use/release/orta-gateway"
