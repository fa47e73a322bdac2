#!/usr/bin/env bash
# The monitoring overlay under Docker: `up` of docker-compose.yaml + docker-compose.monitoring.yaml
# (the central, 5 agencies of .data/, Prometheus), then, through Prometheus's HTTP API on the
# loopback port Docker published, waits (bounded, polling) until Prometheus reports every bet of
# .data/ stored, the draw done, the central up, every alert rule loaded and none firing.
#   COMPOSE=v2 bash scripts/docker-monitoring.sh     # `docker compose` (the default)
#   COMPOSE=v1 bash scripts/docker-monitoring.sh     # `docker-compose` 1.29
# Needs a Docker engine and the local base images (../shared/docker/prepare-local-images.sh),
# curl and python3. It uses the container names `server`, `clientK` and `prometheus`, so nothing
# else may use them meanwhile; everything it creates is removed on exit (also on failure, and
# after MONITORING_TIMEOUT seconds, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."

# Bounded as a whole (default 600 s): nothing here may hang CI.
if [[ -z ${MONITORING_INNER:-} ]]; then
    exec timeout --kill-after=30 "${MONITORING_TIMEOUT:-600}" env MONITORING_INNER=1 bash "$0" "$@"
fi

case ${COMPOSE:-v2} in
v2) compose=(docker compose) ;;
v1) compose=(docker-compose) ;;
*)
    echo "COMPOSE=${COMPOSE} is invalid: expected v2 (docker compose) or v1 (docker-compose)" >&2
    exit 2
    ;;
esac
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-lottery-monitoring}
# No registry and no buildx here: the legacy builder takes the local base images.
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}
deadline_s=${DEADLINE_S:-180}
files=(-f docker-compose.yaml -f docker-compose.monitoring.yaml)
started=$SECONDS

cleanup() {
    local code=$?
    if ((code != 0)); then
        echo "docker-monitoring: failed (exit $code); the last lines:" >&2
        "${compose[@]}" "${files[@]}" logs --tail 20 server prometheus >&2 || true
    fi
    "${compose[@]}" "${files[@]}" down -v -t 10 >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 124' TERM

"${compose[@]}" "${files[@]}" build prometheus
"${compose[@]}" "${files[@]}" up -d
api=$("${compose[@]}" "${files[@]}" port prometheus 9090)
echo "== Prometheus published at http://$api"
for agency in 1 2 3 4 5; do
    code=$(docker wait "client$agency")
    [[ $code == 0 ]] || { echo "docker-monitoring: client$agency exited $code" >&2; exit 1; }
done
sent=$(cat .data/agency-*.csv | wc -l)
echo "== the 5 agencies got their winners ($sent bets sent)"

query() {
    curl -fsS --max-time 5 "http://$api/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(result[0]["value"][1] if result else "")'
}
poll() {
    local q=$1 want=$2 until=$((SECONDS + deadline_s)) got=""
    while ((SECONDS < until)); do
        got=$(query "$q" 2>/dev/null || true)
        if [[ $got == "$want" ]]; then
            echo "== Prometheus: $q = $got"
            return 0
        fi
        sleep 0.5
    done
    echo "docker-monitoring: $q is '$got', expected $want within ${deadline_s}s" >&2
    return 1
}
poll 'sum(lottery_bets_stored_total{job="lottery-central"})' "$sent"
poll 'lottery_draw_done{job="lottery-central"}' 1
poll 'up{job="lottery-central"}' 1
rules=$(curl -fsS --max-time 5 "http://$api/api/v1/rules" | python3 -c 'import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
print(len([r for g in groups for r in g["rules"] if r["type"] == "alerting"]))')
[[ $rules == $(grep -c -- '- alert:' monitoring/alerts.yml) ]] ||
    { echo "docker-monitoring: $rules alert rules loaded" >&2; exit 1; }
firing=$(query 'count(ALERTS{alertstate="firing"})')
[[ -z $firing ]] || { echo "docker-monitoring: $firing alerts firing" >&2; exit 1; }
echo "== docker-monitoring: success in $((SECONDS - started)) s ($rules alert rules loaded)"
