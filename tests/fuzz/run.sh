#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 30), starting from the committed seeds. The
# toolchain is stable: RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z sanitizer flags.
# A crash leaves its input in tests/fuzz/artifacts/TARGET/; commit it as a regression test.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
if ! command -v cargo-fuzz >/dev/null; then
    cargo install --locked cargo-fuzz --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
for target in token_parse event_decode websocket_frames; do
    mkdir -p "corpus/$target"
    log="corpus/$target.log"
    if ! cargo fuzz run --fuzz-dir "$PWD" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed; the input is in tests/fuzz/artifacts/$target/" >&2
        exit 1
    fi
    echo "$target: $(grep -E '^Done' "$log")"
done
