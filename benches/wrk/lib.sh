# What the measuring scripts here share; sourced, not run.

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A self-signed P-256 certificate for localhost: DIR/cert.pem and DIR/key.pem (0600).
self_signed_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
  chmod 600 "$1/key.pem"
}

# pinned CPUS CMD...: runs CMD on CPUS in a session of its own at nice $NICE (default -15 as
# root, as the referee does), keeping its PID (so `pinned ... &` gives CMD's PID in $!). With
# sched_autogroup on, a nice level only ranks processes inside one session, so the session's
# autogroup gets it too: the measured processes then win their cores from anything else on the
# machine, and each is its own group on its core.
pinned() {
  local nice=${NICE:--15}
  [ "$(id -u)" = 0 ] || nice=0
  exec setsid "$(dirname "${BASH_SOURCE[0]}")/prio" "$nice" "$@"
}
