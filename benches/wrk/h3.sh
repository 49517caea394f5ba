#!/usr/bin/env bash
# HTTP/3 against the gateway's own HTTP/2 on the same route (a 2 KiB static page from the file
# cache, or PAGE=...), as the referee measures: the gateway pinned to core 1 with one worker,
# the load generator (benches/h3load.rs, the same client shape for both protocols) pinned to
# core 0, ROUNDS interleaved rounds of SECS seconds (the order flips each round), medians.
#   cargo build --release && bash benches/wrk/h3.sh
#   ROUNDS=5 SECS=5 CONNS=16 STREAMS=4 bash benches/wrk/h3.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${ORTA_BIN:-$PWD/target/release/orta-gateway}"
rounds="${ROUNDS:-3}" secs="${SECS:-5}" conns="${CONNS:-16}" streams="${STREAMS:-4}"
page="${PAGE:-/index.html}"
https=18743 http=18780
[ -x "$bin" ] || { echo "no gateway binary at $bin: cargo build --release" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is missing: apt-get install util-linux" >&2; exit 1; }
cargo bench --bench h3load --no-run >/dev/null 2>&1
load=$(ls -t target/release/deps/h3load-* | grep -v '\.d$' | head -1)
work=$(mktemp -d)
gw=""
cleanup() { [ -n "$gw" ] && kill "$gw" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/www"
head -c 2048 /dev/zero | tr '\0' 'x' >"$work/www/index.html"
cat >"$work/gateway.toml" <<CONF
[server]
http = "127.0.0.1:$http"
https = "127.0.0.1:$https"
redirect_to_https = false
workers = 1
http3 = true
max_connections_per_ip = 100000
[tls]
source = "self-signed"
self_signed_dir = "$work/certs"
[headers]
strict_transport_security = ""
x_content_type_options = ""
x_frame_options = ""
referrer_policy = ""
content_security_policy = ""
permissions_policy = ""
[log]
level = "warn"
access = "off"
[[route]]
path = "/"
root = "$work/www"
index = "index.html"
CONF
TOKIO_WORKER_THREADS=1 taskset -c 1 "$bin" run --config "$work/gateway.toml" 2>"$work/gateway.log" &
gw=$!
for _ in $(seq 100); do
  curl -sk "https://127.0.0.1:$https$page" >/dev/null 2>&1 && break
  sleep 0.1
done
url="https://127.0.0.1:$https$page"
echo "h3 vs h2: $url, $conns connections x $streams streams, ${secs}s x $rounds rounds" >&2
taskset -c 0 "$load" h3 "$url" "$work/certs/ca.pem" "$conns" "$streams" 1 >/dev/null   # warm-up
taskset -c 0 "$load" h2 "$url" "$work/certs/ca.pem" "$conns" "$streams" 1 >/dev/null
# the gateway's CPU time (user + system, clock ticks) from /proc
cpu_ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
hz=$(getconf CLK_TCK)
results="$work/results"
for r in $(seq "$rounds"); do
  order="h2 h3"; [ $((r % 2)) = 0 ] && order="h3 h2"
  for p in $order; do
    before=$(cpu_ticks)
    line=$(taskset -c 0 "$load" "$p" "$url" "$work/certs/ca.pem" "$conns" "$streams" "$secs")
    used=$(( $(cpu_ticks) - before ))
    # requests per second of the gateway's CPU: what counts when the client is the limit
    per_cpu=$(echo "$line" | awk -v t="$used" -v hz="$hz" '{printf "%.0f", $9 / (t / hz)}')
    cpu=$(awk -v t="$used" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.0f", 100 * t / hz / s}')
    echo "round $r: $line server_cpu% $cpu req_per_cpu_s $per_cpu" >&2
    echo "$line server_cpu% $cpu req_per_cpu_s $per_cpu" >>"$results"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for p in h2 h3; do
  rps=$(grep "^$p " "$results" | awk '{print $3}' | median)
  p99=$(grep "^$p " "$results" | awk '{print $7}' | median)
  cpu=$(grep "^$p " "$results" | awk '{print $13}' | median)
  per=$(grep "^$p " "$results" | awk '{print $15}' | median)
  echo "$p median: req/s $rps p99_ms $p99 server_cpu% $cpu req_per_cpu_s $per"
done | tee "$work/summary"
awk '/^h2/ {r2=$4; p2=$6; c2=$10} /^h3/ {r3=$4; p3=$6; c3=$10}
     END {printf "h3/h2: req/s %.2f, p99 %.2f, req per server CPU-s %.2f\n", r3/r2, p3/p2, c3/c2}' "$work/summary"
