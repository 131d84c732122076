#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of client and backend bytes (fuzz/, cargo-fuzz and
# libFuzzer), short enough for CI: builds the targets once, then runs each for SECONDS (default
# 10) from the committed seeds (fuzz/seeds/) plus whatever earlier runs on this machine found
# (fuzz/corpus/, not committed). Stable Rust: `--sanitizer none` keeps cargo-fuzz off the
# nightly-only -Zsanitizer flags; the coverage instrumentation itself works on stable.
# A crash fails the run and leaves the input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-10}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
# Not --locked: a dependency added to the bridge enters fuzz/Cargo.lock here (the versions
# already in it stay) instead of failing the run; commit the updated lock with such a change.
cargo fuzz build --sanitizer none

for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target" artifacts
    log="artifacts/$target.log"
    if cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
        echo "fuzz $target: ${runs:-?} inputs in ${seconds}s, $cov, no crash"
    else
        echo "fuzz $target: FAILED (log: fuzz/$log)"
        tail -n 40 "$log"
        exit 1
    fi
done
