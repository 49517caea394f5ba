#!/usr/bin/env bash
# End-to-end benchmark: orta-gateway side by side with nginx (and, with SERVERS="nginx caddy
# haproxy", the others) on this machine, with the referee of ../shared/bench (load generator and
# server on different cores, interleaved rounds, medians, correctness checked before timing).
# Builds the release binary, runs the scenarios, and writes benches/RESULTS.md.
#   benches/wrk/compare.sh                      # all scenarios, nginx as the reference
#   SCENARIOS="ping tls_ping" benches/wrk/compare.sh
#   ORTA_RATE_LIMIT=1 benches/wrk/compare.sh    # /api/ behind a rate-limit zone that never trips
#   PGO=0 benches/wrk/compare.sh                # the plain release build, without PGO
#   ORTA_BIN=target/pgo/release/orta-gateway benches/wrk/compare.sh   # a binary already built
# Needs (Debian): nginx wrk nghttp2-client (h2load) curl, and llvm-NN for PGO (see pgo.sh); run
# as root for the referee's priority boost. Takes ~5 minutes with nginx alone, after the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
referee="${REFEREE:-$repo/../shared/bench/bench.sh}"
[ -f "$referee" ] || { echo "compare.sh: the referee is not at $referee (set REFEREE)" >&2; exit 1; }
for tool in nginx wrk h2load curl; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool is missing: apt-get install nginx wrk nghttp2-client curl" >&2; exit 1; }
done
# the release build with profile-guided optimisation (benches/wrk/pgo.sh, as the Docker image
# ships it); PGO=0 measures the plain `cargo build --release` instead
if [ -n "${ORTA_BIN:-}" ]; then
  bin=$(realpath "$ORTA_BIN") build="${ORTA_BUILD:-given as ORTA_BIN}"
elif [ "${PGO:-1}" = 0 ]; then
  cargo build --release --locked
  bin="$repo/target/release/orta-gateway" build="cargo build --release"
else
  bin=$(bash "$repo/benches/wrk/pgo.sh")
  build="cargo build --release with PGO (benches/wrk/pgo.sh)"
fi
out="${OUT_DIR:-/tmp/orta-bench-$(date +%Y%m%d-%H%M%S)}"
CANDIDATE_CMD="bash $repo/benches/wrk/candidate-orta.sh" \
CANDIDATE_NAME=orta \
ORTA_BIN="$bin" \
SERVERS="${SERVERS:-nginx}" \
OUT_DIR="$out" \
  bash "$referee"
# the 30 KB gzip static file the referee has no scenario for
gzip_static=$(ROUNDS="${ROUNDS:-3}" bash "$repo/benches/wrk/static-gzip.sh" "$bin")
{
  echo "# Benchmark results"
  echo
  echo "Measured with \`benches/wrk/compare.sh\` (the referee in \`../shared/bench/bench.sh\`): one"
  echo "server core, the load generator and the origins on the other, interleaved rounds, medians."
  echo "\`xnginx\` is the paired ratio to nginx in the same rounds; \`req/cpu-s\` is requests per"
  echo "second of server CPU (what matters when the client core is the limit)."
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "- kernel: $(uname -r)"
  echo "- orta-gateway: $(git rev-parse --short HEAD) ($("$bin" --version)), $build"
  echo "- nginx: $(nginx -v 2>&1 | sed 's/.*\///'); wrk: $(wrk --version 2>&1 | head -1 | awk '{print $2}'); h2load: $(h2load --version 2>&1 | head -1 | awk '{print $NF}')"
  [ -n "${ORTA_RATE_LIMIT:-}" ] && echo "- /api/ behind a rate-limit zone (1000000/s, never tripped)"
  echo
  echo '```'
  cat "$out/summary.txt"
  echo '```'
  echo
  echo "The referee has no scenario for a mid-size compressible file; \`benches/wrk/static-gzip.sh\`"
  echo "measures one the same way (pinned cores, interleaved rounds, medians, checked response)."
  echo "nginx gzips it on every request (\`gzip on\`, level 1, as in the referee's config); the"
  echo "gateway serves the variant it compressed once and cached."
  echo
  echo '```'
  echo "$gzip_static"
  echo '```'
} > "$repo/benches/RESULTS.md"
echo "compare.sh: wrote benches/RESULTS.md (raw results in $out)"
