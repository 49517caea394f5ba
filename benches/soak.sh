#!/usr/bin/env bash
# Soak: the release gateway for DURATION seconds (default 1800) under mixed traffic (HTTP/1.1,
# HTTPS over HTTP/1.1 and HTTP/2, static and proxied, booking uploads), with a config reload
# every 10 s and an API replica killed (SIGKILL) and restarted every minute. Prints the
# requests, failures, RSS and open descriptors every 10 s and a summary (examples/soak.rs);
# exits 1 if an idempotent request failed.
#   benches/soak.sh                 # 30 minutes
#   DURATION=120 benches/soak.sh
#   ORTA_BIN=target/release/orta-gateway benches/soak.sh   # a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ORTA_BIN:-}" ]; then
  cargo build --release --locked
  ORTA_BIN=target/release/orta-gateway
fi
work=$(mktemp -d /tmp/orta-soak.XXXXXX)
echo "soak: work directory $work (gateway.log, logs/access.log)" >&2
cargo run --release --locked --example soak -- "$(realpath "$ORTA_BIN")" "${DURATION:-1800}" "$work"
