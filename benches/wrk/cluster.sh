#!/usr/bin/env bash
# What a cluster rate-limit zone costs against a local one, as the referee measures: two
# gateways pinned to core 1 (one worker each), the same proxied route (`/api/ping` of a
# single-process nginx origin, 200 B) behind a zone that never trips, `scope = "local"` in one
# and `scope = "cluster"` in the other (every request decided by redis-server, the requests
# waiting together in one EVALSHA); wrk, the origin and redis-server pinned to core 0
# (REDIS_CPUS=1: redis-server on the gateways' core); every process at nice -15 in a session
# of its own, as the referee runs them (NICE=0 to turn off); ROUNDS interleaved rounds of SECS
# seconds (the order flips each round); medians, and the median of each round's own ratio.
#   cargo build --release && bash benches/wrk/cluster.sh
#   ROUNDS=5 SECS=5 CONNS=64 bash benches/wrk/cluster.sh   (64 connections, as the referee)
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/wrk/lib.sh
bin="${ORTA_BIN:-$PWD/target/release/orta-gateway}"
rounds="${ROUNDS:-3}" secs="${SECS:-5}" conns="${CONNS:-64}"
# CLIENTS=N: requests from N client addresses (X-Forwarded-For, the gateways trusting
# loopback) instead of one, so every bucket is a different key
clients="${CLIENTS:-1}"
# REDIS_CPUS=1 puts redis-server beside the gateway instead of on the load generator's core
redis_cpus="${REDIS_CPUS:-0}"
# AA=1: the "cluster" gateway gets a local zone too (an A/A run): what the method reads when
# nothing differs, the noise floor of the numbers below
second_scope=cluster
[ "${AA:-0}" = 1 ] && second_scope=local
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
pinned 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
pinned "$redis_cpus" redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
pids+=($!)
for _ in $(seq 100); do
  [ "$(redis-cli -p "$redis" ping 2>/dev/null)" = PONG ] && break
  sleep 0.05
done
# the same gateway config but for the zone's scope
config() {
  local port=$1 scope=$2 cluster=""
  [ "$scope" = cluster ] && cluster=$'[cluster]\nredis = "redis://127.0.0.1:'"$redis"$'/0"\nnode_name = "bench"'
  cat <<CONF
[server]
http = "127.0.0.1:$port"
https = ""
workers = 1
trusted_proxies = ["127.0.0.1/32"]
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
config "$cluster_port" "$second_scope" >"$work/cluster.toml"
declare -A gw
for scope in local cluster; do
  TOKIO_WORKER_THREADS=1 pinned 1 "$bin" run --config "$work/$scope.toml" 2>"$work/$scope.log" &
  pids+=($!)
  gw[$scope]=$!
done
redis_pid=${pids[1]}
# CPU time (user + system, clock ticks) of a process, from /proc
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# busy clock ticks of core 0 (the load generator's), all processes
core0_busy() { awk '$1 == "cpu0" {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
for port in $local_port $cluster_port; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/ping")" = 200 ] && break
    sleep 0.1
  done
done
port_of() { [ "$1" = local ] && echo "$local_port" || echo "$cluster_port"; }
script=()
if [ "$clients" -gt 1 ]; then
  cat >"$work/clients.lua" <<LUA
local n = $clients
request = function()
  local i = math.random(0, n - 1)
  return wrk.format(nil, nil, { ["X-Forwarded-For"] = "10." .. math.floor(i / 65536) % 256 .. "." .. math.floor(i / 256) % 256 .. "." .. i % 256 })
end
LUA
  script=(-s "$work/clients.lua")
fi
run() { (pinned 0 wrk -t1 -c"$conns" -d"$2"s --latency "${script[@]}" "http://127.0.0.1:$(port_of "$1")/api/ping"); }
echo "$second_scope zone (as \"cluster\") vs local zone: /api/ping via the gateway, $conns connections, $clients client address(es), ${secs}s x $rounds rounds" >&2
run local 2 >/dev/null
run cluster 2 >/dev/null
results="$work/results"
for r in $(seq "$rounds"); do
  order="local cluster"; [ $((r % 2)) = 0 ] && order="cluster local"
  for scope in $order; do
    g0=$(cpu_ticks "${gw[$scope]}") r0=$(cpu_ticks "$redis_pid") c0=$(core0_busy)
    out=$(run "$scope" "$secs")
    g=$(( $(cpu_ticks "${gw[$scope]}") - g0 )) rd=$(( $(cpu_ticks "$redis_pid") - r0 )) c0=$(( $(core0_busy) - c0 ))
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    # wrk's 99% line: a number and a unit (us, ms, s)
    p99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else {sub("s","",v); v*=1000}; print v}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    # requests per second of the gateway's own CPU: what it costs the gateway, whatever the
    # shared load-generator core allowed
    per_cpu=$(awk -v n="$rps" -v s="$secs" -v t="$g" -v hz="$hz" 'BEGIN {printf "%.0f", n * s / (t / hz)}')
    cpu=$(awk -v t="$g" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.0f", 100 * t / hz / s}')
    rcpu=$(awk -v t="$rd" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.0f", 100 * t / hz / s}')
    core0=$(awk -v t="$c0" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.0f", 100 * t / hz / s}')
    echo "round $r: $scope req/s $rps p99_ms $p99 gateway_cpu% $cpu req_per_gateway_cpu_s $per_cpu redis_cpu% $rcpu core0_busy% $core0 non2xx ${non2xx:-0}" >&2
    echo "$scope $rps $p99 $per_cpu $cpu $r" >>"$results"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for scope in local cluster; do
  col() { grep "^$scope " "$results" | awk -v c="$1" '{print $c}' | median; }
  echo "$scope median: req/s $(col 2) p99_ms $(col 3) req_per_gateway_cpu_s $(col 4) gateway_cpu% $(col 5)"
done | tee "$work/summary"
awk '/^local/ {r1=$4; p1=$6; c1=$8} /^cluster/ {r2=$4; p2=$6; c2=$8}
     END {printf "cluster/local: req/s %.2fx, p99 added %.3f ms, requests per gateway CPU-second %.2fx\n", r2/r1, p2-p1, c2/c1}' "$work/summary"
# the same within each round (local and cluster ran back to back), then the median over
# rounds: steadier on a shared machine than the ratio of two medians
awk '{v[$6, $1] = $0} END {for (k in v) {split(k, p, SUBSEP); if (p[2] == "local") {split(v[k], l, " "); split(v[p[1], "cluster"], c, " "); print c[2] / l[2], c[3] - l[3]}}}' "$results" >"$work/paired"
echo "paired by round (median of the rounds): req/s $(awk '{print $1}' "$work/paired" | median | awk '{printf "%.2fx", $1}'), p99 added $(awk '{print $2}' "$work/paired" | median | awk '{printf "%.3f ms", $1}')"
grep -h "cluster_fallback\|not answering" "$work/cluster.log" >&2 || true
