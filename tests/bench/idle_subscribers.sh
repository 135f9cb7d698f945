#!/usr/bin/env bash
# Authority memory per idle WebSocket subscriber: starts a release authority on a fresh data
# directory, opens N idle subscribers (tests/bench/idle_subscribers.py, plain sockets, no
# dependencies), prints one JSON line with the RSS growth per connection.
# Usage: tests/bench/idle_subscribers.sh [N]   (N ≤ the open-file limit minus a few hundred)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-10000}
cargo build --release -q -p revocast-authority
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
REVOCAST_LOG=warn target/release/revocast-authority --listen "127.0.0.1:$port" --data-dir "$dir" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/subscriber.key" ] && curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
python3 tests/bench/idle_subscribers.py 127.0.0.1 "$port" "$(cat "$dir/subscriber.key")" "$n" "$pid"
