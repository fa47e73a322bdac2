#!/usr/bin/env bash
# Times the default dataset as whole processes: the central and five agencies start together,
# the clock stops when the last agency exits. Durable acknowledgements on.
#   scripts/bench-processes.sh [RUNS]   (default 9; prints every run and the median)
# Builds the release binaries first. Extra variables (e.g. LOTTERY_FSYNC=false) pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-9}
cargo build --release --quiet --bin lottery-server --bin lottery-client
times=()
for ((r = 1; r <= runs; r++)); do
    dir=$(mktemp -d)
    port=$((20000 + RANDOM % 20000))
    start=$(date +%s%N)
    SERVER_IP=127.0.0.1 SERVER_PORT=$port LOTTERY_AGENCIES=5 BETS_FILE="$dir/bets.csv" LOGGING_LEVEL=WARN \
        ./target/release/lottery-server >"$dir/server.log" &
    server=$!
    pids=()
    for k in 1 2 3 4 5; do
        CLI_ID=$k CLI_SERVER_ADDRESS=127.0.0.1:$port CLI_DATA_FILE=.data/agency-$k.csv CLI_LOG_LEVEL=WARN \
            ./target/release/lottery-client >"$dir/client$k.log" &
        pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    end=$(date +%s%N)
    kill -TERM "$server"
    wait "$server" || failed=1
    ((failed == 0)) || { echo "run $r failed; logs in $dir" >&2; exit 1; }
    ms=$(((end - start) / 1000000))
    times+=("$ms")
    echo "run $r: ${ms} ms"
    rm -rf "$dir"
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
echo "median of $runs runs: ${median} ms (central start → last agency exit, 5 agencies, 79,070 bets)"
