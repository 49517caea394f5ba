# What the measuring scripts here share; sourced, not run.

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A self-signed P-256 certificate for localhost: DIR/cert.pem and DIR/key.pem (0600).
self_signed_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
  chmod 600 "$1/key.pem"
}
