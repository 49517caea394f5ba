#!/usr/bin/env bash
# What a cluster rate-limit zone costs against a local one, as the referee measures: two
# gateways pinned to core 1 (one worker each), the same proxied route (`/api/ping` of a
# single-process nginx origin, 200 B) behind a zone that never trips, `scope = "local"` in one
# and `scope = "cluster"` in the other (one EVALSHA per request to redis-server); wrk, the
# origin and redis-server pinned to core 0; ROUNDS interleaved rounds of SECS seconds (the
# order flips each round), medians.
#   cargo build --release && bash benches/wrk/cluster.sh
#   ROUNDS=5 SECS=5 CONNS=32 bash benches/wrk/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${ORTA_BIN:-$PWD/target/release/orta-gateway}"
rounds="${ROUNDS:-3}" secs="${SECS:-5}" conns="${CONNS:-32}"
origin=18890 redis=18891 local_port=18892 cluster_port=18893
[ -x "$bin" ] || { echo "no gateway binary at $bin: cargo build --release" >&2; exit 1; }
for tool in taskset wrk nginx redis-server; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install util-linux wrk nginx redis-server)" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$origin;
    location /api/ping { default_type application/json; return 200 '{"pong":true,"padding":"$(head -c 160 /dev/zero | tr '\0' x)"}'; }
    location /api/health { return 200 'ok'; }
  }
}
CONF
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
taskset -c 0 redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
pids+=($!)
# the same gateway config but for the zone's scope
config() {
  local port=$1 scope=$2 cluster=""
  [ "$scope" = cluster ] && cluster=$'[cluster]\nredis = "redis://127.0.0.1:'"$redis"$'/0"\nnode_name = "bench"'
  cat <<CONF
[server]
http = "127.0.0.1:$port"
https = ""
workers = 1
max_connections = 100000
max_connections_per_ip = 100000
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
[[rate_limit]]
name = "bench"
rate = "1000000/s"
burst = 1000000
scope = "$scope"
$cluster
[[upstream]]
name = "origin"
servers = ["127.0.0.1:$origin"]
[[route]]
path = "/api/"
upstream = "origin"
rate_limit = "bench"
CONF
}
config "$local_port" local >"$work/local.toml"
config "$cluster_port" cluster >"$work/cluster.toml"
for scope in local cluster; do
  TOKIO_WORKER_THREADS=1 taskset -c 1 "$bin" run --config "$work/$scope.toml" 2>"$work/$scope.log" &
  pids+=($!)
done
for port in $local_port $cluster_port; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/ping")" = 200 ] && break
    sleep 0.1
  done
done
port_of() { [ "$1" = local ] && echo "$local_port" || echo "$cluster_port"; }
run() { taskset -c 0 wrk -t1 -c"$conns" -d"$2"s --latency "http://127.0.0.1:$(port_of "$1")/api/ping"; }
echo "cluster zone vs local zone: /api/ping via the gateway, $conns connections, ${secs}s x $rounds rounds" >&2
run local 2 >/dev/null
run cluster 2 >/dev/null
results="$work/results"
for r in $(seq "$rounds"); do
  order="local cluster"; [ $((r % 2)) = 0 ] && order="cluster local"
  for scope in $order; do
    out=$(run "$scope" "$secs")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    # wrk's 99% line: a number and a unit (us, ms, s)
    p99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else {sub("s","",v); v*=1000}; print v}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    echo "round $r: $scope req/s $rps p99_ms $p99 non2xx ${non2xx:-0}" >&2
    echo "$scope $rps $p99" >>"$results"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for scope in local cluster; do
  echo "$scope median: req/s $(grep "^$scope " "$results" | awk '{print $2}' | median) p99_ms $(grep "^$scope " "$results" | awk '{print $3}' | median)"
done | tee "$work/summary"
awk '/^local/ {r1=$4; p1=$6} /^cluster/ {r2=$4; p2=$6}
     END {printf "cluster/local: req/s %.2fx, p99 added %.3f ms\n", r2/r1, p2-p1}' "$work/summary"
grep -h "cluster_fallback\|not answering" "$work/cluster.log" >&2 || true
