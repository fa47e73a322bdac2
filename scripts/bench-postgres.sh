#!/usr/bin/env bash
# The PostgreSQL store's load benchmark beside the file store's, in the same run (issue 13):
# 10 agencies × 200,000 bets, durable acknowledgements, RUNS times each, interleaved.
#   scripts/bench-postgres.sh [RUNS]        (default 3)
# Runs under `pg_virtualenv -t -o fsync=on` (a throwaway PostgreSQL 15 cluster with fsync on, so
# COMMIT with synchronous_commit = on really waits for the disk), 2 centrals sharing the database.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
agencies=${AGENCIES:-10}
bets=${BETS:-200000}
cargo build --locked --release --example bench
bench=target/release/examples/bench
inner=$(mktemp)
trap 'rm -f "$inner"' EXIT
cat > "$inner" <<INNER
set -euo pipefail
for run in \$(seq $runs); do
    echo "== run \$run: file store"
    $bench --agencies $agencies --bets-per-agency $bets
    echo "== run \$run: PostgreSQL, 2 centrals"
    $bench --postgres --centrals 2 --agencies $agencies --bets-per-agency $bets
done
INNER
pg_virtualenv -t -o fsync=on bash "$inner"
