#!/usr/bin/env bash
# Memory per idle connection, the gateway against nginx with equivalent configs: one worker each
# (pinned to the last core, the client to the first), a fresh process of each server for each
# kind of connection, a small static index answered by the server itself. For each kind, N
# connections are opened one after another and left idle; RSS is read before, 1.5 s after the
# last one opened, and 2 s after they all closed.
#   benches/wrk/connections.sh target/release/orta-gateway
# Kinds (N from the environment): plain TCP before any request (PLAIN=5000), plain HTTP/1.1
# keep-alive after one answered request (PLAIN=5000), HTTPS (TLS 1.3, HTTP/1.1) keep-alive after
# one request (TLS=3000), HTTP/2 over TLS after one finished stream (TLS=3000).
# SERVERS="nginx orta" by default. Needs (Debian): nginx openssl python3.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$(realpath "${1:?usage: connections.sh BINARY}")
plain=${PLAIN:-5000} tls=${TLS:-3000}
servers=${SERVERS:-nginx orta}
for tool in nginx openssl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "connections.sh: $tool is missing: apt-get install nginx openssl python3 util-linux" >&2; exit 1; }
done
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=65536
ulimit -n "$nofile"
[ "$nofile" -gt $((2 * (plain > tls ? plain : tls) + 100)) ] || { echo "connections.sh: open files limit $nofile is too low" >&2; exit 1; }
cores=$(nproc)
server_core=$((cores - 1))
work=$(mktemp -d /tmp/orta-connections.XXXXXX)
pid=""
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi; }
cleanup() { stop; rm -rf "$work"; }
trap cleanup EXIT
http=$(free_port) https=$(free_port)
mkdir -p "$work/www" "$work/nginx"
head -c 600 /dev/urandom | base64 -w 76 > "$work/www/index.html"
self_signed_cert "$work"
cat > "$work/nginx/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; worker_rlimit_nofile $nofile;
error_log $work/nginx/error.log; pid $work/nginx/pid;
events { worker_connections 20000; }
http { access_log off; keepalive_timeout 300s; client_header_timeout 300s; keepalive_requests 1000000;
  server { listen 127.0.0.1:$http; listen 127.0.0.1:$https ssl http2;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    root $work/www; } }
CONF
cat > "$work/gateway.toml" <<CONF
[server]
http = "127.0.0.1:$http"
https = "127.0.0.1:$https"
redirect_to_https = false
workers = 1
header_read_timeout = "300s"
keepalive_timeout = "300s"
max_connections = 100000
max_connections_per_ip = 100000

[tls]
source = "files"
cert = "$work/cert.pem"
key = "$work/key.pem"

[log]
access = "off"

[[route]]
path = "/"
root = "$work/www"
index = "index.html"
CONF

start() {
  case $1 in
    nginx) taskset -c "$server_core" nginx -c "$work/nginx/nginx.conf" & pid=$! ;;
    orta) taskset -c "$server_core" "$bin" run --config "$work/gateway.toml" >"$work/orta.log" 2>&1 & pid=$! ;;
  esac
  for _ in $(seq 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$https),0.2).close()" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "connections.sh: $1 did not start" >&2; cat "$work/orta.log" >&2 2>/dev/null; exit 1
}

printf '%-34s %-6s %7s %10s %10s %12s %12s\n' kind server conns "RSS before" "RSS held" "KiB / conn" "after close"
for kind in plain_idle plain_keepalive tls_keepalive h2_keepalive; do
  n=$plain; case $kind in tls_*|h2_*) n=$tls ;; esac
  for server in $servers; do
    start "$server"
    taskset -c 0 python3 - "$kind" "$server" "$n" "$pid" "$http" "$https" <<'PY'
import socket, ssl, sys, time
kind, server, n, pid, http, https = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(f"{server}: connection closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"{server}: {head.splitlines()[0]!r}")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(65536)

def context(alpn):
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = ssl.TLSVersion.TLSv1_3
    c.set_alpn_protocols([alpn])
    return c

def h2_get(s):
    # preface, empty SETTINGS, then HEADERS (END_STREAM|END_HEADERS) on stream 1:
    # :method GET, :scheme https, :path /, :authority localhost (literal, indexed name 1)
    block = bytes([0x82, 0x87, 0x84, 0x01, 9]) + b"localhost"
    frame = lambda t, f, sid, payload: len(payload).to_bytes(3, "big") + bytes([t, f]) + sid.to_bytes(4, "big") + payload
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 0x5, 1, block))
    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(f"{server}: h2 connection closed before the stream ended")
            buf += chunk
        length, ftype, flags, sid = int.from_bytes(buf[:3], "big"), buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        payload, buf = buf[9:9 + length], buf[9 + length:]
        if sid == 1 and ftype == 1 and payload[:1] != b"\x88":  # :status 200, indexed
            raise SystemExit(f"{server}: h2 answer is not 200: {payload[:8]!r}")
        if ftype == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0, b""))  # ack the server's SETTINGS
        if sid == 1 and ftype in (0, 1) and flags & 1:
            return

tls13 = context("http/1.1")
h2 = context("h2")
before = rss_kib()
conns = []
for _ in range(n):
    if kind.startswith("plain"):
        s = socket.create_connection(("127.0.0.1", http))
        if kind == "plain_keepalive":
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            read_response(s)
    elif kind == "tls_keepalive":
        s = tls13.wrap_socket(socket.create_connection(("127.0.0.1", https)), server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        read_response(s)
    else:
        s = h2.wrap_socket(socket.create_connection(("127.0.0.1", https)), server_hostname="localhost")
        assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
        h2_get(s)
    conns.append(s)
time.sleep(1.5)
held = rss_kib()
for s in conns:
    s.close()
time.sleep(2)
after = rss_kib()
print(f"{kind:<34} {server:<6} {n:>7} {before:>7} KiB {held:>6} KiB {(held - before) / n:>8.2f} KiB {after / before:>11.1f}x")
PY
    stop
  done
done
