#!/usr/bin/env bash
# End-to-end check of docker-compose.ha.yaml (issue 13): two centrals on one PostgreSQL
# database, five agencies that know both, under Compose v2 or v1:
#   COMPOSE=v2 bash scripts/docker-e2e-ha.sh     # `docker compose` (the default)
#   COMPOSE=v1 bash scripts/docker-e2e-ha.sh     # `docker-compose` 1.29
# It builds the three images (postgres, server, client), copies the checkout to a scratch
# directory (as a fresh clone), and there:
#   1. `up -d` with the default dataset (79,070 bets): agencies 1, 2, 5 start on server1, 3 and 4
#      on server2; every agency exits 0 with its winners (52/40/41/44/43), both centrals stored
#      batches, exactly one created the schema, one `sorteo` in all (the other central restores
#      it), one `draw` row, 79,070 rows in `bets`, and `lottery-server export -` in a central's
#      container writes exactly the rows of the agency files; `docker inspect` of postgres and
#      the centrals shows no password (it comes from Compose secrets);
#   1b. `down` and `up -d` again on the same database volume: the agencies learn from `Welcome`
#      that everything is stored, nothing is stored again, the same winners and checks;
#   2. failover: a new lottery (`down -v`, `up -d`) with the agencies paced (loop.period 25ms, so
#      an upload takes over 2.5 s); once agencies 1, 2 and 5 have batches acknowledged by server1
#      (their progress lines), `docker kill server1` (SIGKILL). Each of them logs its move to
#      server2 and finishes there: the same checks as in 1, the draw recorded by server2 only;
#      then `docker start server1` finds the lottery drawn in the database.
#   3. the database restarts: a new lottery, paced as in 2; once every agency has batches
#      acknowledged, `docker restart postgres`; the centrals refuse what they cannot commit, the
#      agencies retry and finish: the same checks as in 1.
# Every `action:` line is parsed by the graders' rule (scripts/e2e_logs.py); the first run may
# not log `result: fail`.
# Everything it creates (containers, the network, the database volume, the scratch directory,
# dangling layers unless E2E_PRUNE=0) is removed on exit, also on failure (keeping the logs in
# /tmp/lottery-e2e-ha-failed/); it stops itself after E2E_TIMEOUT seconds (default 600).
# Needs a Docker engine, the local base images (../shared/docker/prepare-local-images.sh; with
# COMPOSE_V2=1 it installs Compose v2 too), python3 and git. It uses the container names
# `postgres`, `server1`, `server2` and `clientK`, so nothing else may use them meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [[ -z ${E2E_INNER:-} ]]; then
    exec timeout --kill-after=30 "${E2E_TIMEOUT:-600}" env E2E_INNER=1 bash "$0" "$@"
fi

case ${COMPOSE:-v2} in
v2) compose=(docker compose) ;;
v1) compose=(docker-compose) ;;
*)
    echo "COMPOSE=${COMPOSE} is invalid: expected v2 (docker compose) or v1 (docker-compose)" >&2
    exit 2
    ;;
esac
"${compose[@]}" version >/dev/null 2>&1 || {
    echo "FAIL: ${compose[*]} is not installed (COMPOSE=${COMPOSE:-v2})" >&2
    exit 1
}
export DOCKER_BUILDKIT=0 # the legacy builder never pulls; see shared/docker/README.md
# The configuration comes from the files only: no stray value from the caller's shell.
unset SERVER_PORT SERVER_IP SERVER_LISTEN_BACKLOG LOGGING_LEVEL LOTTERY_AGENCIES \
    CLI_SERVER_ADDRESS CLI_BATCH_MAXAMOUNT CLI_LOG_LEVEL CLI_LOOP_PERIOD CLI_CONNECT_TIMEOUT \
    POSTGRES_PASSWORD
started=$SECONDS
work=$(mktemp -d /tmp/lottery-e2e-ha.XXXXXX)
proj=$work/ha
file=docker-compose.ha.yaml
agencies=5
# The README's winners for the default dataset, agencies 1..5.
winners=(52 40 41 44 43)
total_bets=79070

say() { printf '== [%4ds] ha %s: %s\n' $((SECONDS - started)) "${COMPOSE:-v2}" "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
py() { python3 "$repo/scripts/e2e_logs.py" "$@"; }
# compose in the project directory; no single command may take more than 2 minutes.
dc() { (cd "$proj" && timeout 120 "${compose[@]}" -p lottery-ha-e2e -f "$file" "$@"); }
# The whole log so far, without compose's escape sequences (see docker-e2e.sh).
logs_to() { dc logs --no-color | sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' >"$1"; }
psql_value() { docker exec postgres psql -U lottery -d lottery -Atc "$1"; }

cleanup() {
    local code=$?
    set +e
    if ((code != 0)) && [[ -d $proj ]]; then
        echo "---- logs of the failed run (last 80 lines) ----" >&2
        dc logs --no-color 2>/dev/null | tail -n 80 >&2
        mkdir -p "${E2E_FAILED_LOGS:-/tmp/lottery-e2e-ha-failed}"
        cp "$work"/*.log "${E2E_FAILED_LOGS:-/tmp/lottery-e2e-ha-failed}/" 2>/dev/null &&
            echo "---- every log of this run: ${E2E_FAILED_LOGS:-/tmp/lottery-e2e-ha-failed}/" >&2
    fi
    [[ -f $proj/$file ]] && dc down -t 1 -v --remove-orphans >/dev/null 2>&1
    rm -rf "$work"
    [[ ${E2E_PRUNE:-1} == 0 ]] || docker image prune -f >/dev/null 2>&1
    say "cleaned up (exit $code)"
}
trap cleanup EXIT

# Waits for client1..N to exit and checks that each exited 0.
wait_clients() {
    local k codes
    codes=$(timeout 120 docker wait $(for ((k = 1; k <= agencies; k++)); do printf 'client%d ' "$k"; done)) ||
        fail "the agencies did not finish within 120 s"
    [[ $(tr -d '0\n' <<<"$codes") == "" ]] || fail "agency exit codes: $(tr '\n' ' ' <<<"$codes")"
}

# Whether container $1's log has a line matching the regex $2 (grep reads it all: with -q, an
# early exit could end `docker logs` by SIGPIPE and pipefail would turn a match into a miss).
log_has() { docker logs "$1" 2>&1 | grep -E "$2" >/dev/null; }

# Waits (up to $2 seconds) until container $1's log has a line matching the regex $3.
wait_log() {
    local name=$1 deadline=$((SECONDS + $2))
    until log_has "$name" "$3"; do
        ((SECONDS < deadline)) || fail "$name logged no line matching '$3' within $2 s"
        sleep 0.1
    done
}

# What every lottery must end with, from the log $1: each agency's winners as README lists
# them, one draw row, every bet stored once (the database's count, and the export in a central's
# container ($2) against the agency files).
check_lottery() {
    local log=$1 central=$2 k got
    for ((k = 1; k <= agencies; k++)); do
        got=$(grep -E "^client$k +\| .*action: consulta_ganadores \| result: success" "$log" |
            sed 's/.*cant_ganadores: //')
        [[ $got == "${winners[k - 1]}" ]] || fail "client$k: cant_ganadores '$got', expected ${winners[k - 1]}"
    done
    [[ $(psql_value "SELECT count(*) FROM draw") == 1 ]] || fail "not exactly one draw row"
    [[ $(psql_value "SELECT count(*) FROM bets") == "$total_bets" ]] ||
        fail "the bets table has $(psql_value "SELECT count(*) FROM bets") rows, expected $total_bets"
    docker exec "$central" lottery-server export - >"$work/export.csv" 2>"$work/export.log" ||
        fail "lottery-server export in $central failed: $(cat "$work/export.log")"
    py stored "$work/export.csv" "$proj/.data" "$agencies"
    echo "   winners ${winners[*]}; one draw row; $total_bets bets in the table; the export is exactly the agency files"
}

for name in postgres server1 server2 client1; do
    if docker container inspect "$name" >/dev/null 2>&1; then
        fail "a container named $name exists already (docker rm -f $name if it is a leftover)"
    fi
done

say "build the images (${compose[*]} -f $file build)"
(cd "$repo" && timeout 900 "${compose[@]}" -f "$file" build >"$work/build.log" 2>&1) ||
    { tail -n 40 "$work/build.log" >&2; fail "build failed"; }

say "a fresh copy of the checkout in $proj"
mkdir -p "$proj"
chmod 755 "$work" "$proj"
(git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) |
    tar -xf - -C "$proj"
[[ -f $proj/$file && -f $proj/.data/agency-5.csv ]] || fail "the copy is incomplete"
(cd "$proj" && "${compose[@]}" -f "$file" config -q) || fail "$file is not valid"

say "1. up -d: two centrals, five agencies, the default dataset"
round_started=$SECONDS
dc up -d >/dev/null 2>&1 || fail "up failed"
wait_clients
say "   the agencies finished $((SECONDS - round_started)) s after up"
logs_to "$work/ha-1.log"
py check "$work/ha-1.log" --agencies "$agencies" --data "$proj/.data" \
    --central server1 --central server2
for central in server1 server2; do
    grep -Eq "^$central +\| .*action: apuesta_recibida \| result: success" "$work/ha-1.log" ||
        fail "$central stored no batch: the agencies did not use both centrals"
done
[[ $(grep -Ec "^server[12] +\| .*action: database \| result: success \| .*schema_version: [0-9]+ \| schema_found: 0 " \
    "$work/ha-1.log") == 1 ]] || fail "not exactly one central created the schema"
check_lottery "$work/ha-1.log" server2
# The password is a Compose secret: no container's configuration shows it.
for name in postgres server1 server2; do
    docker inspect "$name" >"$work/inspect-$name.json" || fail "docker inspect $name failed"
    grep -Eq '"(POSTGRES_PASSWORD|LOTTERY_DATABASE_URL)=|lottery:lottery@' "$work/inspect-$name.json" &&
        fail "docker inspect $name shows the database password"
done
echo "   docker inspect shows no password (postgres and the centrals read it from secrets)"
# Each central's status page (a free port of 127.0.0.1) shows the whole lottery, from the database.
for central in server1 server2; do
    at=$(dc port "$central" 8080) || fail "$central: the status page is not published"
    [[ $at == 127.0.0.1:* ]] || fail "$central: the status page is published on $at"
    curl -fsS --max-time 5 "http://$at/status.json" >"$work/status.json" || fail "$central: no /status.json"
    python3 - "$work/status.json" "$total_bets" <<'PY' || fail "$central: /status.json is not the whole lottery"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["shared_store"] and s["phase"] == "drawn" and s["totals"]["bets"] == int(sys.argv[2]), s["totals"]
assert {a["central"].split(":")[0] for a in s["agencies"]} == {"server1", "server2"}, s["agencies"]
PY
    grep -qx ready <<<"$(curl -fsS --max-time 5 "http://$at/readyz")" || fail "$central: /readyz is not ready"
done
echo "   both centrals' status pages show all $total_bets bets and the agencies on each central"
dc down -t 10 >/dev/null 2>&1 || fail "down failed"

say "1b. up -d again on the same database volume: nothing stored twice, the same winners"
dc up -d >/dev/null 2>&1 || fail "second up failed"
wait_clients
logs_to "$work/ha-1b.log"
py check "$work/ha-1b.log" --source server1 --source server2
grep -Eq "action: apuesta_recibida" "$work/ha-1b.log" && fail "the second up stored bets again"
check_lottery "$work/ha-1b.log" server1
dc down -t 10 -v >/dev/null 2>&1 || fail "down -v failed"

say "2. failover: docker kill server1 while agencies 1, 2 and 5 upload through it"
round_started=$SECONDS
CLI_LOOP_PERIOD=25ms dc up -d >/dev/null 2>&1 || fail "up failed"
# A progress line with acked > 0: server1 has acknowledged batches of this agency.
for k in 1 2 5; do
    wait_log "client$k" 60 "action: upload \| result: in_progress \| .*acked: [1-9]"
done
log_has server1 "action: sorteo" && fail "server1 drew before it was killed"
docker kill server1 >/dev/null || fail "docker kill server1 failed"
say "   server1 killed $((SECONDS - round_started)) s after up"
wait_clients
say "   the agencies finished $((SECONDS - round_started)) s after up"
logs_to "$work/ha-2.log"
# Not a normal run: an agency may log a failed attempt on its way to server2.
py check "$work/ha-2.log" --allow-fail --source server1 --source server2
for k in 1 2 5; do
    grep -Eq "^client$k +\| .*action: (re)?connect \| result: in_progress \| address: server1:12345 \| next_address: server2:12345" \
        "$work/ha-2.log" || fail "client$k did not move from server1 to server2"
    grep -Eq "^client$k +\| .*action: upload \| result: success \| .*resumed_after: [1-9]" "$work/ha-2.log" ||
        fail "client$k did not resume after acknowledged batches"
done
grep -Eq "^server1 +\| .*action: sorteo" "$work/ha-2.log" && fail "server1 logged a sorteo"
[[ $(grep -Ec "^server2 +\| .*action: sorteo \| result: success" "$work/ha-2.log") == 1 ]] ||
    fail "server2 did not log exactly one sorteo"
[[ $(psql_value "SELECT central FROM draw") == server2:* ]] ||
    fail "the draw row names $(psql_value "SELECT central FROM draw"), expected server2"
check_lottery "$work/ha-2.log" server2
docker start server1 >/dev/null || fail "docker start server1 failed"
wait_log server1 60 "action: database \| result: success \| .*schema_found: [1-9][0-9]* \| batches: [1-9][0-9]* \| ready: $agencies \| drawn: true"
echo "   clients 1, 2, 5 moved to server2 and resumed; server2 drew; server1 restarted finds the draw"
dc down -t 10 -v >/dev/null 2>&1 || fail "down -v failed"

say "3. the database restarts (docker restart postgres) while every agency uploads"
round_started=$SECONDS
CLI_LOOP_PERIOD=25ms dc up -d >/dev/null 2>&1 || fail "up failed"
for ((k = 1; k <= agencies; k++)); do
    wait_log "client$k" 60 "action: upload \| result: in_progress \| .*acked: [1-9]"
done
if log_has server1 "action: sorteo" || log_has server2 "action: sorteo"; then
    fail "a central drew before the database restarted"
fi
docker restart -t 10 postgres >/dev/null || fail "docker restart postgres failed"
say "   postgres restarted $((SECONDS - round_started)) s after up"
wait_clients
say "   the agencies finished $((SECONDS - round_started)) s after up"
logs_to "$work/ha-3.log"
# Not a normal run: the centrals log the batches the database could not take.
py check "$work/ha-3.log" --allow-fail --source server1 --source server2
[[ $(grep -Ec "^server[12] +\| .*action: sorteo \| result: success" "$work/ha-3.log") == 1 ]] ||
    fail "not exactly one sorteo"
check_lottery "$work/ha-3.log" server1
echo "   $(grep -Ec "^server[12] +\| .*action: group_commit \| result: fail" "$work/ha-3.log") failed group commits" \
    "while the database was down, retried by the agencies; nothing lost or stored twice"
dc down -t 10 -v >/dev/null 2>&1 || fail "down -v failed"

say "docker e2e (several centrals) passed (${compose[*]}) in $((SECONDS - started)) s"
