#!/usr/bin/env bash
# Durable ingest: revocations/s through the real HTTP API with group commit, and latency.
# Starts a release authority on a fresh data directory, drives it with wrk, prints wrk's
# report. Usage: tests/bench/ingest.sh [CONNECTIONS] [SECONDS]
# (needs `wrk`: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/../.."
conns=${1:-64}
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p revocast-authority
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
REVOCAST_LOG=warn target/release/revocast-authority --listen "127.0.0.1:$port" --data-dir "$dir" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/admin.key" ] && curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
REVOCAST_ADMIN_KEY=$(cat "$dir/admin.key") wrk -t2 -c"$conns" -d"${secs}s" --latency \
  -s tests/bench/ingest.lua "http://127.0.0.1:$port"
echo "head seq after run: $(curl -s "127.0.0.1:$port/readyz")"
curl -s "127.0.0.1:$port/metrics" | grep -E '^revocast_commit_batch_size_(sum|count)'
