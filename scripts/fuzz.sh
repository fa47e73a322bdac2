#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time and reports its executions and findings.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; the issue's bar is 600)
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`); the script
# installs cargo-fuzz if it is missing. A crash leaves its input in fuzz/artifacts/<target>/
# and makes the script exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
status=0
for target in decoder session; do
    log=$(mktemp)
    echo "== fuzz $target for ${seconds}s"
    if cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        result="no findings"
    else
        result="FINDING (see fuzz/artifacts/$target/)"
        status=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    echo "   $target: $execs executions in ${seconds}s, $cov, peak RSS ${peak} MB: $result"
    ((status == 0)) || tail -n 40 "$log"
    rm -f "$log"
done
exit $status
