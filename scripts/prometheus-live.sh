#!/usr/bin/env bash
# One live run of the monitoring, without Docker: a real central (file store, /metrics on a free
# loopback port) and two agencies, Prometheus as a process scraping it every second with the
# alert rules of monitoring/alerts.yml, and queries through Prometheus's HTTP API until they
# return the stored count (bounded by a deadline; no fixed sleeps). Prints what it found and
# how long it took; exit 0 only when Prometheus reports every bet the agencies sent.
#
#   bash scripts/prometheus-live.sh            # builds the debug binaries if needed
#   BIN_DIR=target/release bash scripts/prometheus-live.sh
#
# Needs prometheus and promtool (Debian's prometheus package), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
bin_dir=${BIN_DIR:-target/debug}
deadline_s=${DEADLINE_S:-90}
if [[ -z ${BIN_DIR:-} ]]; then
    cargo build --locked --quiet --bin lottery-server --bin lottery-client
fi
for tool in prometheus promtool curl python3; do
    command -v "$tool" >/dev/null || { echo "prometheus-live: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d -t lottery-prometheus-XXXXXX)
pids=()
cleanup() {
    local code=$?
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if ((code != 0)); then
        echo "prometheus-live: failed (exit $code); logs:" >&2
        tail -n 20 "$work"/*.log >&2 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Waits until FILE has a line matching REGEX and prints the first one; fails at the deadline.
wait_for_line() {
    local file=$1 regex=$2 until=$((SECONDS + deadline_s)) line
    while ((SECONDS < until)); do
        if line=$(grep -m1 -E "$regex" "$file" 2>/dev/null); then
            echo "$line"
            return 0
        fi
        sleep 0.1
    done
    echo "prometheus-live: no line matching '$regex' in $file within ${deadline_s}s" >&2
    return 1
}

# The agency files, and how many bets they hold.
cargo run --locked --quiet --example datagen -- "$work/data" 2 1000 >/dev/null
sent=$(cat "$work"/data/agency-*.csv | wc -l)

env SERVER_IP=127.0.0.1 SERVER_PORT=0 LOTTERY_AGENCIES=2 BETS_FILE="$work/bets.csv" \
    HTTP_ADDR=127.0.0.1:0 "$bin_dir/lottery-server" >"$work/central.log" 2>&1 &
pids+=($!)
central=$(wait_for_line "$work/central.log" 'action: listen \| result: success' | sed 's/.*address: //')
metrics=$(wait_for_line "$work/central.log" 'action: http \| result: success' |
    sed -E 's/.*address: ([^ |]+).*/\1/')
echo "== central at $central, metrics at http://$metrics/metrics"

# Prometheus: the repository's rules, this run's target, a one-second scrape.
mkdir -p "$work/prometheus"
cp monitoring/alerts.yml "$work/prometheus/"
cat >"$work/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: lottery-central
    static_configs:
      - targets: ["$metrics"]
EOF
promtool check config "$work/prometheus/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address=127.0.0.1:0 >"$work/prometheus.log" 2>&1 &
pids+=($!)
api=$(wait_for_line "$work/prometheus.log" 'msg="Listening on"' | sed -E 's/.*address=([^ ]+).*/\1/')
echo "== Prometheus at http://$api"

agencies=()
for agency in 1 2; do
    CLI_ID=$agency CLI_SERVER_ADDRESS=$central CLI_DATA_FILE="$work/data/agency-$agency.csv" \
        "$bin_dir/lottery-client" >"$work/agency-$agency.log" 2>&1 &
    pids+=($!)
    agencies+=($!)
done
for pid in "${agencies[@]}"; do
    wait "$pid" || { echo "prometheus-live: an agency failed" >&2; exit 1; }
done
echo "== both agencies got their winners ($sent bets sent)"

# The value of the instant query QUERY (its first sample), or nothing while there is none.
query() {
    curl -fsS --max-time 5 "http://$api/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(result[0]["value"][1] if result else "")'
}
# Polls QUERY until it returns WANT; fails at the deadline showing the last answer.
poll() {
    local q=$1 want=$2 until=$((SECONDS + deadline_s)) got=""
    while ((SECONDS < until)); do
        got=$(query "$q" || true)
        if [[ $got == "$want" ]]; then
            echo "== Prometheus: $q = $got"
            return 0
        fi
        sleep 0.2
    done
    echo "prometheus-live: $q is '$got', expected $want within ${deadline_s}s" >&2
    return 1
}
poll 'sum(lottery_bets_stored_total{job="lottery-central"})' "$sent"
poll 'lottery_draw_done{job="lottery-central"}' 1
poll 'up{job="lottery-central"}' 1
poll 'count(lottery_build_info{job="lottery-central",store="file"} == 1)' 1
# The rules loaded and were evaluated: every alert of alerts.yml, none firing after a clean run.
rules=$(curl -fsS --max-time 5 "http://$api/api/v1/rules" | python3 -c 'import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
print(" ".join(sorted(r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting")))')
echo "== alert rules loaded: $rules"
[[ $(wc -w <<<"$rules") -eq $(grep -c -- '- alert:' monitoring/alerts.yml) ]]
firing=$(query 'count(ALERTS{alertstate="firing"})')
[[ -z $firing ]] || { echo "prometheus-live: $firing alerts firing after a clean run" >&2; exit 1; }
echo "== prometheus-live: success in $((SECONDS - started)) s"
