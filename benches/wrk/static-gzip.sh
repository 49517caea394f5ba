#!/usr/bin/env bash
# The static scenario the referee (../shared/bench) lacks: a 30 KB app.css asked for with
# `Accept-Encoding: gzip`, orta-gateway against nginx (gzip level 1, sendfile, open_file_cache),
# each pinned to SERVER_CPU with wrk on LOADGEN_CPU, interleaved rounds, medians, the response
# checked (gzip that inflates to the file) before timing. Prints a table in the referee's
# columns; compare.sh appends it to benches/RESULTS.md.
#   benches/wrk/static-gzip.sh [path/to/orta-gateway]
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
bin="${1:-$(dirname "$0")/../../target/release/orta-gateway}"
rounds="${ROUNDS:-3}" duration="${DURATION:-5}" conns="${CONNECTIONS:-64}"
server_cpu="${SERVER_CPUS:-1}" loadgen_cpu="${LOADGEN_CPUS:-0}"
nginx_port=18781 orta_port=18782 admin_port=18783
for tool in nginx wrk curl taskset; do
  command -v "$tool" >/dev/null || { echo "static-gzip.sh: $tool is missing" >&2; exit 1; }
done
work=$(mktemp -d /tmp/orta-static-gzip.XXXXXX)
# nginx workers started by root run as nobody: they must be able to read the files
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# 30 KB of distinct CSS rules (compresses like a real stylesheet, not like a repeated line)
mkdir -p "$work/www" "$work/nginx/tmp"
for i in $(seq 0 799); do
  printf '.gown-%d { margin: %dpx %dpx; color: #%06x; }\n' "$i" $((i % 17)) $((i % 11)) $((i * 7919 % 16777216))
done >"$work/www/app.css"
truncate -s 30720 "$work/www/app.css"
size=$(stat -c %s "$work/www/app.css")

cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 10000; }
http {
  types { text/css css; }
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 75s; keepalive_requests 10000000;
  open_file_cache max=10000 inactive=60s; open_file_cache_valid 60s;
  gzip on; gzip_comp_level 1; gzip_min_length 512; gzip_vary on; gzip_types text/css;
  client_body_temp_path $work/nginx/tmp/body; proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fcgi; uwsgi_temp_path $work/nginx/tmp/uwsgi; scgi_temp_path $work/nginx/tmp/scgi;
  server { listen 127.0.0.1:$nginx_port backlog=4096; location / { root $work/www; } }
}
CONF
cat >"$work/gateway.toml" <<CONF
[server]
http = "127.0.0.1:$orta_port"
redirect_to_https = false
workers = 1
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
[compression]
algorithms = ["gzip"]
min_size = 512
[[route]]
path = "/"
root = "$work/www"
[log]
access = "off"
[admin]
listen = "127.0.0.1:$admin_port"
CONF

taskset -c "$server_cpu" nginx -c "$work/nginx/nginx.conf" &
pids+=($!)
taskset -c "$server_cpu" "$bin" run --config "$work/gateway.toml" >"$work/orta.log" 2>&1 &
pids+=($!)
declare -A pid=([nginx]=${pids[0]} [orta]=${pids[1]}) port=([nginx]=$nginx_port [orta]=$orta_port)

for s in nginx orta; do
  url="http://127.0.0.1:${port[$s]}/app.css"
  for _ in $(seq 100); do curl -s -o /dev/null "$url" && break; sleep 0.05; done
  got=$(curl -s -H 'Accept-Encoding: gzip' "$url" | gzip -dc | wc -c)
  enc=$(curl -s -o /dev/null -D - -H 'Accept-Encoding: gzip' "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')
  [ "$enc" = gzip ] && [ "$got" = "$size" ] || { echo "static-gzip.sh: $s check failed (encoding '$enc', $got of $size bytes)" >&2; exit 1; }
  taskset -c "$loadgen_cpu" wrk -t1 -c"$conns" -d1 -H 'Accept-Encoding: gzip' "$url" >/dev/null
done

# CPU ticks of a server: the process and its children (nginx's worker)
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
results="$work/results"
order=(nginx orta)
for r in $(seq "$rounds"); do
  for s in "${order[@]}"; do
    t0=$(cpu_ticks "${pid[$s]}")
    out=$(taskset -c "$loadgen_cpu" wrk -t1 -c"$conns" -d"$duration" --latency -H 'Accept-Encoding: gzip' "http://127.0.0.1:${port[$s]}/app.css")
    t1=$(cpu_ticks "${pid[$s]}")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    cpu=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print (b - a) / 100}')
    echo "$s $r $rps $p50 $p99 $cpu" >>"$results"
  done
  order=("${order[1]}" "${order[0]}")
done

# wrk prints latencies with units (us, ms, s): in ms
python3 - "$results" "$duration" "$size" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
duration, size = float(sys.argv[2]), int(sys.argv[3])
def ms(v):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
by = {}
for s, r, rps, p50, p99, cpu in rows:
    by.setdefault(s, {})[int(r)] = (float(rps), ms(p50), ms(p99), float(cpu))
print(f"i static app.css {size // 1024} KB, gzip (not in the referee; benches/wrk/static-gzip.sh)")
print(f"{'server':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'xnginx':>7} {'cpu%':>5} {'req/cpu-s':>10}")
for s in ("nginx", "orta"):
    runs = by[s]
    med = lambda i: statistics.median(v[i] for v in runs.values())
    ratio = statistics.median(runs[r][0] / by["nginx"][r][0] for r in runs)
    cpu = med(3)
    print(f"{s:<8} {med(0):>8.0f} {med(1):>8.2f} {med(2):>8.2f} {ratio:>7.2f} {cpu / duration * 100:>5.0f} {med(0) * duration / cpu:>10.0f}")
PY
