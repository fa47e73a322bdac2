#!/usr/bin/env bash
# End-to-end check of the Docker workflow, as a user runs it from a fresh clone:
#   1. `docker compose up` of docker-compose.yaml: every agency exits 0 with the winners its data
#      file holds, and the central logs exactly one draw; after `down` (volume kept) and `up`
#      again, nothing is stored twice and every agency gets the same winners;
#   2. a graceful stop while agencies are mid-upload (`stop -t 10`): every container logs its
#      shutdown and exits 0, well before the grace period;
#   3. ./generate-compose.sh for 3 agencies: that file runs the lottery to the end too.
# Everything it creates (containers, networks, volumes, the generated file, dangling image layers)
# is removed on exit, also on failure; it stops itself after E2E_TIMEOUT seconds (default 900).
# Needs a Docker engine and local base images: ../shared/docker/prepare-local-images.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${E2E_INNER:-} ]]; then
    exec timeout --kill-after=30 "${E2E_TIMEOUT:-900}" env E2E_INNER=1 bash "$0" "$@"
fi

export DOCKER_BUILDKIT=0 # the legacy builder never pulls; see shared/docker/README.md
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=(docker-compose)
fi
run_id="$$$RANDOM"
project="lotterye2e${run_id}"
generated="docker-compose-e2e-${run_id}.yaml"
started=$SECONDS

say() { printf '== [%4ds] %s\n' $((SECONDS - started)) "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
dc() { "${compose[@]}" -p "$project" "$@"; }
dc3() { "${compose[@]}" -p "${project}gen" -f "$generated" "$@"; }

cleanup() {
    local code=$?
    set +e
    if ((code != 0)); then
        echo "---- logs of the failed run (last 60 lines per project) ----" >&2
        dc logs --no-color 2>/dev/null | tail -n 60 >&2
        [[ -f $generated ]] && dc3 logs --no-color 2>/dev/null | tail -n 60 >&2
    fi
    dc down -t 1 -v --remove-orphans >/dev/null 2>&1
    [[ -f $generated ]] && dc3 down -t 1 -v --remove-orphans >/dev/null 2>&1
    rm -f "$generated"
    docker image prune -f >/dev/null 2>&1
    say "cleaned up (exit $code)"
}
trap cleanup EXIT

# Winners per agency, straight from the data files (the number is the last CSV field).
expected_winners() {
    python3 - "$@" <<'PY'
import csv, sys
for path in sys.argv[1:]:
    with open(path, newline="", encoding="utf-8") as f:
        print(sum(1 for row in csv.reader(f) if row and row[-1].strip() == "7574"))
PY
}

exit_code() { docker inspect -f '{{.State.ExitCode}}' "$1"; }

# Waits for the clients of a project to exit; checks exit 0, the winners line, and one draw.
check_lottery() {
    local -n run=$1
    local agencies=$2 k ids logs expected
    ids=$("${run[@]}" ps -q $(for ((k = 1; k <= agencies; k++)); do printf 'client%d ' "$k"; done))
    timeout 180 docker wait $ids >/dev/null || fail "clients did not finish within 180 s"
    logs=$("${run[@]}" logs --no-color)
    mapfile -t expected < <(expected_winners $(for ((k = 1; k <= agencies; k++)); do printf '.data/agency-%d.csv ' "$k"; done))
    for ((k = 1; k <= agencies; k++)); do
        local id
        id=$("${run[@]}" ps -q "client$k")
        [[ $(exit_code "$id") == 0 ]] || fail "client$k exited $(exit_code "$id")"
        grep -q "^client${k}_1 .*action: consulta_ganadores | result: success | cant_ganadores: ${expected[k - 1]}\$" <<<"$logs" ||
            fail "client$k did not log cant_ganadores: ${expected[k - 1]}"
        echo "   client$k: exit 0, cant_ganadores: ${expected[k - 1]}"
    done
    local draws
    draws=$(grep -c "^server_1 .*action: sorteo | result: success" <<<"$logs" || true)
    [[ $draws == 1 ]] || fail "the server logged $draws draws, expected 1"
    echo "   server: one sorteo"
}

say "build (${compose[*]})"
timeout 900 "${compose[@]}" -p "$project" build >/dev/null || fail "build failed"

say "1. docker compose up: the default lottery, 5 agencies"
timeout 120 "${compose[@]}" -p "$project" up -d >/dev/null 2>&1 || fail "up failed"
default=("${compose[@]}" -p "$project")
check_lottery default 5
say "1b. down (keeping the bets volume) and up again: nothing stored twice, the same winners"
dc down -t 10 >/dev/null 2>&1
timeout 120 "${compose[@]}" -p "$project" up -d >/dev/null 2>&1 || fail "second up failed"
check_lottery default 5
grep -q "^server_1 .*action: apuesta_recibida" <<<"$(dc logs --no-color server)" &&
    fail "the second run stored bets again"
echo "   server: no batch stored again"
dc down -t 10 -v >/dev/null 2>&1

say "2. graceful stop (-t 10) while the agencies are mid-upload"
# One bet per batch makes the upload last a few seconds, and a 6th, absent agency keeps the
# draw from running: when the stop comes, each agency is either uploading or waiting at the
# barrier, and either way must log its shutdown and exit 0.
CLI_BATCH_MAXAMOUNT=1 LOTTERY_AGENCIES=6 timeout 120 "${compose[@]}" -p "$project" up -d >/dev/null 2>&1 ||
    fail "up failed"
stop_started=$SECONDS
timeout 60 "${compose[@]}" -p "$project" stop -t 10 >/dev/null 2>&1 || fail "stop failed"
stop_took=$((SECONDS - stop_started))
((stop_took < 10)) || fail "stop took ${stop_took}s, the whole grace period"
logs=$(dc logs --no-color)
for service in server client1 client2 client3 client4 client5; do
    id=$(dc ps -q "$service")
    [[ $(exit_code "$id") == 0 ]] || fail "$service exited $(exit_code "$id") after SIGTERM"
    grep -q "^${service}_1 .*action: shutdown | result: success" <<<"$logs" || fail "$service logged no shutdown"
done
done_uploading=$(grep -c "action: upload | result: success" <<<"$logs" || true)
stored=$(grep -c "^server_1 .*action: apuesta_recibida | result: success" <<<"$logs" || true)
echo "   6 containers logged their shutdown and exited 0 in ${stop_took}s;" \
    "$((5 - done_uploading)) of 5 agencies were mid-upload ($stored one-bet batches stored)"
dc down -t 1 -v >/dev/null 2>&1

say "3. ./generate-compose.sh $generated 3"
./generate-compose.sh "$generated" 3 >/dev/null
"${compose[@]}" -f "$generated" config -q || fail "the generated file is not valid"
grep -q 'LOTTERY_AGENCIES: "3"' "$generated" || fail "the generated file does not set 3 agencies"
timeout 120 "${compose[@]}" -p "${project}gen" -f "$generated" up -d >/dev/null 2>&1 || fail "up of the generated file failed"
generated_run=("${compose[@]}" -p "${project}gen" -f "$generated")
check_lottery generated_run 3

say "docker e2e passed"
