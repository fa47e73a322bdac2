#!/usr/bin/env bash
# End-to-end check of the course's workflow (issue 10), driven the way the course's graders and
# students drive a TP0 project, under Compose v2 or v1:
#   COMPOSE=v2 bash scripts/docker-e2e.sh     # `docker compose` (the default)
#   COMPOSE=v1 bash scripts/docker-e2e.sh     # `docker-compose` 1.29
# It builds the two images once (reused by every case), copies the checkout to a scratch
# directory `tp0/` (as a fresh clone), and there:
#   1. generar-compose.sh for N = 0, 1, 3, 5 and 100: valid files with `server`, `client1…N`
#      container names; docker-compose.yaml is exactly its output for 5;
#   2. the default files, `up -d` twice with a `down` between: two independent lotteries of the
#      default dataset (79,070 bets), each agency's winners, one sorteo, every row stored once;
#      the status page, on a free port of 127.0.0.1, shows the drawn lottery, /readyz is ready;
#      within the first, `docker restart server` keeps the bets and the draw;
#   3. the opt-in persistent volume (docker-compose.persist.yaml): a second `up` after `down`
#      stores nothing twice and gives the same winners;
#   4. server/config.ini and client/config.yaml with the course's values (SERVER_IP = server,
#      DEBUG, backlog 8, batch.maxAmount 10, loop.period 150ms; 400ms under v1, see below), and
#      .data/agency-K.csv of 64, 99 and 16 rows for 1 agency, 60-100 rows for 3 and 5: each case
#      E2E_REPEAT times (default 5)
#      read as the graders read (`up -d`, then `logs -f` in compose's order up to the first
#      `exited with code` line): config lines, batches of 10, the rows stored exactly (the bets
#      file against the agency files), one sorteo before every consulta_ganadores, each agency's
#      winners, exit 0; a run whose `logs -f` went silent after every agency exited 0 (a Docker
#      stall seen once in CI, see compose_stalled) starts again, once per e2e run, saying so;
#   5. SIGTERM: `docker stop server` with N = 0, `docker stop client1 -t 20` mid-run, and
#      `compose stop -t 10` of everything: each stopped container logs its shutdown and exits 0.
# Every `action:` line of every run is parsed by the graders' rule (scripts/e2e_logs.py), and no
# normal run may log `result: fail` or an `action: exit` line of ours.
# Everything it creates (containers, networks, volumes, the scratch directory, dangling layers)
# is removed on exit, also on failure; it stops itself after E2E_TIMEOUT seconds (default 900).
# Exit 75 says the Docker daemon was found stuck (see compose_stalled); any other non-zero exit
# is a failure.
# Needs a Docker engine, the local base images (../shared/docker/prepare-local-images.sh; with
# COMPOSE_V2=1 it installs Compose v2 too), python3 and git. It uses the container names
# `server` and `clientK`, as the course does, so nothing else may use them meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [[ -z ${E2E_INNER:-} ]]; then
    exec timeout --kill-after=30 "${E2E_TIMEOUT:-900}" env E2E_INNER=1 bash "$0" "$@"
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
repeat=${E2E_REPEAT:-5}
# loop.period of the ordered readings: the graders' 150ms under v2. docker-compose 1.29 (Python)
# takes ~0.5 s to attach `logs -f` (v2: ~0.07 s), longer than the three paced steps a 16-row
# agency takes to reach the draw at 150ms; what it then prints is the containers' backlogs, in no
# order across containers. So v1 reads agencies paced at 400ms.
if [[ ${COMPOSE:-v2} == v1 ]]; then period=${E2E_LOOP_PERIOD:-400ms}; else period=${E2E_LOOP_PERIOD:-150ms}; fi
export DOCKER_BUILDKIT=0 # the legacy builder never pulls; see shared/docker/README.md
# The graders' variables come from the files only: no stray value from the caller's shell.
unset SERVER_PORT SERVER_IP SERVER_LISTEN_BACKLOG LOGGING_LEVEL LOTTERY_AGENCIES \
    CLI_SERVER_ADDRESS CLI_BATCH_MAXAMOUNT CLI_LOG_LEVEL CLI_LOOP_PERIOD CLI_CONNECT_TIMEOUT
started=$SECONDS
failed_logs=${E2E_FAILED_LOGS:-/tmp/lottery-e2e-failed}
work=$(mktemp -d /tmp/lottery-e2e.XXXXXX)
proj=$work/tp0
file=docker-compose.yaml # the compose file(s) the current case uses
files=(-f "$file")

say() { printf '== [%4ds] %s: %s\n' $((SECONDS - started)) "${COMPOSE:-v2}" "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
py() { python3 "$repo/scripts/e2e_logs.py" "$@"; }
# compose in the project directory, as the graders run it (the project is named after it);
# no single command may take more than 2 minutes.
dc() { (cd "$proj" && timeout 120 "${compose[@]}" "${files[@]}" "$@"); }
use() {
    file=$1
    files=()
    for f in "$@"; do files+=(-f "$f"); done
}
# The whole log so far, without compose's escape sequences (docker/compose#11727 in 2.26: an
# ESC[2K before every piped line; it is compose's, not ours).
logs_to() { dc logs --no-color | sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' >"$1"; }

cleanup() {
    local code=$?
    set +e
    if ((code != 0)) && [[ -d $proj ]]; then
        echo "---- the containers, as the daemon sees them ----" >&2
        timeout 10 docker ps -a --format '{{.Names}}: {{.Status}}' >&2 ||
            echo "(docker ps did not answer within 10 s: the daemon is stuck)" >&2
        echo "---- logs of the failed run (last 80 lines) ----" >&2
        (cd "$proj" && timeout 30 "${compose[@]}" "${files[@]}" logs --no-color 2>/dev/null) |
            tail -n 80 >&2
        mkdir -p "$failed_logs"
        cp "$work"/*.log* "$failed_logs/" 2>/dev/null &&
            echo "---- every log of this run: $failed_logs/" >&2
    fi
    if [[ -d $proj ]]; then
        for f in docker-compose-dev.yaml docker-compose.yaml; do
            [[ -f $proj/$f ]] || continue
            (cd "$proj" && timeout 60 "${compose[@]}" -f "$f" -f docker-compose.persist.yaml down -t 1 -v \
                --remove-orphans >/dev/null 2>&1)
        done
    fi
    rm -rf "$work"
    # The legacy builder's cache is the dangling builder-stage images: E2E_PRUNE=0 keeps it for
    # a run that follows (.ci/run runs v2, then v1 on the same images).
    [[ ${E2E_PRUNE:-1} == 0 ]] || docker image prune -f >/dev/null 2>&1
    say "cleaned up (exit $code)"
}
trap cleanup EXIT

# `logs -f` read as the graders read it, into $1: in compose's order, up to the first
# `exited with code` line, or up to the first line matching the regex of `--until RE`.
follow() {
    (cd "$proj" && timeout 100 python3 "$repo/scripts/e2e_logs.py" follow "${@:2}" "$1" 90 -- \
        "${compose[@]}" "${files[@]}" logs -f)
}

exit_code() { docker inspect -f '{{.State.ExitCode}}' "$1"; }

# Waits for client1..N to exit and checks that each exited 0.
wait_clients() {
    local n=$1 k codes
    ((n > 0)) || return 0
    codes=$(timeout 120 docker wait $(for ((k = 1; k <= n; k++)); do printf 'client%d ' "$k"; done)) ||
        fail "the agencies did not finish within 120 s"
    [[ $(tr -d '0\n' <<<"$codes") == "" ]] || fail "agency exit codes: $(tr '\n' ' ' <<<"$codes")"
}

# The bets file in the server container holds exactly the rows of .data/agency-1..N.
check_stored() {
    docker cp server:/var/lib/lottery/bets.csv "$work/bets.csv" || fail "cannot copy the bets file"
    py stored "$work/bets.csv" "$proj/.data" "$1"
}

# The status page of central $1, published on a free port of 127.0.0.1, shows the drawn lottery
# of $2 bets; /readyz says ready and the container is healthy (its check asks /readyz).
check_status_page() {
    local at i
    at=$(dc port "$1" 8080) || fail "$1: the status page is not published"
    [[ $at == 127.0.0.1:* ]] || fail "$1: the status page is published on $at, not on 127.0.0.1"
    for ((i = 0; i < 50; i++)); do
        curl -fsS --max-time 5 "http://$at/status.json" >"$work/status.json" 2>/dev/null &&
            grep -q '"phase":"drawn"' "$work/status.json" && break
        sleep 0.2
    done
    python3 - "$work/status.json" "$2" <<'PY' || fail "$1: /status.json does not show the drawn lottery"
import json, sys
s = json.load(open(sys.argv[1]))
t = s["totals"]
assert s["phase"] == "drawn" and t["bets"] == int(sys.argv[2]) and t["agencies_ready"] == 5, t
PY
    grep -qx ready <<<"$(curl -fsS --max-time 5 "http://$at/readyz")" || fail "$1: /readyz is not ready"
    grep -q "<title>Lottery central" <<<"$(curl -fsS --max-time 5 "http://$at/")" || fail "$1: no page at /"
    [[ $(docker inspect -f '{{.State.Health.Status}}' "$1") == healthy ]] || fail "$1 is not healthy"
    echo "   $1's status page at http://$at/: drawn, $2 bets, ready, healthy"
}

for name in server client1; do
    if docker container inspect "$name" >/dev/null 2>&1; then
        fail "a container named $name exists already (docker rm -f $name if it is a leftover)"
    fi
done

say "build the images once (${compose[*]} build)"
(cd "$repo" && timeout 900 "${compose[@]}" -f docker-compose.yaml build >"$work/build.log" 2>&1) ||
    { tail -n 40 "$work/build.log" >&2; fail "build failed"; }

say "a fresh copy of the checkout in $proj"
mkdir -p "$proj"
chmod 755 "$work" "$proj"
(git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) |
    tar -xf - -C "$proj"
[[ -f $proj/generar-compose.sh && -f $proj/server/config.ini ]] || fail "the copy is incomplete"

say "1. generar-compose.sh for N = 0, 1, 3, 5, 100"
for n in 0 1 3 5 100; do
    (cd "$proj" && bash generar-compose.sh "gen-$n.yaml" "$n" >/dev/null 2>&1) || fail "generar-compose.sh $n"
    (cd "$proj" && "${compose[@]}" -f "gen-$n.yaml" config -q) || fail "gen-$n.yaml is not valid"
    [[ $(grep -c '^    container_name: server$' "$proj/gen-$n.yaml") == 1 ]] || fail "gen-$n.yaml: no server container"
    [[ $(grep -c '^    container_name: client[0-9]*$' "$proj/gen-$n.yaml") == "$n" ]] ||
        fail "gen-$n.yaml: not $n client containers"
    grep -q './server/config.ini:/etc/lottery/config.ini:ro' "$proj/gen-$n.yaml" || fail "gen-$n.yaml: no server/config.ini"
    ((n == 0)) || grep -q './client/config.yaml:/etc/lottery/config.yaml:ro' "$proj/gen-$n.yaml" ||
        fail "gen-$n.yaml: no client/config.yaml"
    grep -q '^volumes:' "$proj/gen-$n.yaml" && fail "gen-$n.yaml has a named volume"
    [[ $(grep -c "^  client[0-9]*:$" "$proj/gen-$n.yaml") == "$n" ]] || fail "gen-$n.yaml: not $n clients"
done
cmp -s "$proj/gen-5.yaml" "$proj/docker-compose.yaml" ||
    fail "docker-compose.yaml is not generar-compose.sh's output for 5"
(cd "$proj" && bash generar-compose.sh x.yaml -1 >/dev/null 2>&1) && fail "N=-1 was accepted"
(cd "$proj" && bash generate-compose.sh alias.yaml 3 >/dev/null 2>&1 && cmp -s alias.yaml gen-3.yaml) ||
    fail "generate-compose.sh is not the same script"
echo "   valid for v${COMPOSE#v}; server + clientK names; the config files mounted; no named volume"

say "2. the default files: up -d, down, up -d again: two independent lotteries"
use docker-compose.yaml
default_server="port=12345,listen_backlog=128,logging_level=INFO"
default_client="server_address=server:12345,loop_period=0s,log_level=INFO,batch_max_amount=150"
for cycle in 1 2; do
    dc up -d >/dev/null 2>&1 || fail "up $cycle failed"
    wait_clients 5
    logs_to "$work/default-$cycle.log"
    py check "$work/default-$cycle.log" --agencies 5 --data "$proj/.data" \
        --server-config "$default_server" --client-config "$default_client"
    grep -q "action: recovery | result: success | path: /var/lib/lottery/bets.csv | bytes: 0 |" \
        "$work/default-$cycle.log" || fail "cycle $cycle did not start from an empty bets file"
    check_stored 5
    if ((cycle == 1)); then
        check_status_page server 79070
        # Within one `up` the bets survive a restart of the central (they live in its container).
        docker restart -t 10 server >/dev/null || fail "docker restart server failed"
        for ((i = 0; i < 150; i++)); do
            [[ $(docker logs server 2>&1 | grep -c "action: recovery") == 2 ]] && break
            sleep 0.2
        done
        docker logs server 2>&1 | grep "action: recovery" | tail -n 1 |
            grep -q "| bytes: [1-9][0-9]* | .*| ready: 5 | drawn: true" ||
            fail "after docker restart server the central did not recover the lottery"
        check_stored 5 >/dev/null
        echo "   docker restart server: the central recovered all 79070 bets and the draw"
    fi
    dc down -t 10 >/dev/null 2>&1 || fail "down failed"
done

say "3. opt-in persistence: docker-compose.persist.yaml keeps the bets across down"
py data "$proj/.data" 60 70 80 90 100
use docker-compose.yaml docker-compose.persist.yaml
dc up -d >/dev/null 2>&1 || fail "up with the volume failed"
wait_clients 5
logs_to "$work/persist-1.log"
py check "$work/persist-1.log" --agencies 5 --data "$proj/.data"
dc down -t 10 >/dev/null 2>&1 || fail "down failed"
dc up -d >/dev/null 2>&1 || fail "second up with the volume failed"
wait_clients 5
logs_to "$work/persist-2.log"
py check "$work/persist-2.log" --agencies 5
grep -q "action: apuesta_recibida" "$work/persist-2.log" && fail "the second run stored bets again"
for k in 1 2 3 4 5; do
    want=$(grep "^client$k .*action: consulta_ganadores" "$work/persist-1.log" | sed 's/.*| //')
    got=$(grep "^client$k .*action: consulta_ganadores" "$work/persist-2.log" | sed 's/.*| //')
    [[ -n $want && $want == "$got" ]] || fail "client$k: '$got' after the second up, '$want' before"
done
check_stored 5
echo "   the second up stored nothing and every agency got the same winners"
dc down -t 10 -v >/dev/null 2>&1 || fail "down -v failed"

say "4. the course's config values, and the graders' ordered reading ($period), $repeat times per case"
cat >"$proj/server/config.ini" <<'EOF'
[DEFAULT]
SERVER_PORT = 12345
SERVER_IP = server
SERVER_LISTEN_BACKLOG = 8
LOGGING_LEVEL = DEBUG
EOF
cat >"$proj/client/config.yaml" <<EOF
server:
  address: "server:12345"
loop:
  amount: 5
  period: "$period"
log:
  level: "DEBUG"
batch:
  maxAmount: 10
EOF
course_server="port=12345,listen_backlog=8,logging_level=DEBUG"
course_client="server_address=server:12345,loop_amount=5,loop_period=$period,log_level=DEBUG,batch_max_amount=10"
use docker-compose-dev.yaml
stalls=0
# After a `logs -f` that never printed an exit line: succeeds (the run is to be repeated) only
# when the fault is provably not ours, once per e2e run. Once in CI (Docker 20.10.24, compose
# 1.29), every agency had logged its winners and exited 0, and from that moment compose printed
# nothing more, the daemon's health checks of the central timed out (its own 3 s limit never
# fired: the exec never ran) and the containers could not be stopped. Our programs had done
# their part; the daemon had not. Exits 75 when the daemon cannot even remove the containers.
compose_stalled() {
    local n=$1 log=$2 k states
    states=$(for ((k = 1; k <= n; k++)); do
        timeout 10 docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "client$k" || echo "no answer"
    done)
    echo "   the agencies, as the daemon sees them: $(tr '\n' ',' <<<"$states")" >&2
    [[ $(grep -cx "exited 0" <<<"$states") == "$n" ]] || return 1
    grep -q "exited with code" "$log" && return 1
    stalls=$((stalls + 1))
    ((stalls == 1)) || { echo "   compose stalled a second time" >&2; return 1; }
    mkdir -p "$failed_logs"
    cp "$log" "$failed_logs/$(basename "$log").stalled"
    echo "   RETRY: every agency exited 0, yet compose printed no exit line (a Docker stall, not" \
        "ours; what it printed: $failed_logs/$(basename "$log").stalled); the run starts again" >&2
    dc down -t 1 >/dev/null 2>&1
    for c in server $(for ((k = 1; k <= n; k++)); do printf 'client%d ' "$k"; done); do
        timeout 30 docker rm -f "$c" >/dev/null 2>&1
        # Gone only when the daemon says so: a daemon that does not answer is stuck too.
        if ! timeout 10 docker container inspect "$c" 2>&1 | grep -q "No such container"; then
            echo "FAIL: the Docker daemon cannot remove $c: it is stuck (exit 75: .ci/run" \
                "restarts the daemon and runs this e2e again)" >&2
            exit 75
        fi
    done
}
ordered_case() {
    local n=$1 rows=("${@:2}") run
    py data "$proj/.data" "${rows[@]}"
    (cd "$proj" && bash generar-compose.sh docker-compose-dev.yaml "$n" >/dev/null)
    for ((run = 1; run <= repeat; run++)); do
        local log="$work/ordered-$n-${rows[0]}-$run.log"
        dc up -d >/dev/null 2>&1 || fail "up failed"
        if ! follow "$log"; then
            compose_stalled "$n" "$log" || fail "ordered reading, run $run"
            ((run--))
            continue
        fi
        py check "$log" --ordered --agencies "$n" --data "$proj/.data" --batch 10 \
            --server-config "$course_server" --client-config "$course_client" >/dev/null ||
            fail "ordered reading, run $run: $log"
        wait_clients "$n"
        logs_to "$log.all"
        py check "$log.all" --agencies "$n" --data "$proj/.data" --batch 10 >/dev/null ||
            fail "the whole log of run $run"
        check_stored "$n" >/dev/null
        dc down -t 10 >/dev/null 2>&1 || fail "down failed"
    done
    echo "   $n agencies with ${rows[*]} rows: $repeat of $repeat ordered readings passed" \
        "(config lines, batches of 10, rows stored exactly, sorteo first, winners, exit 0)"
}
ordered_case 1 64
ordered_case 1 99
ordered_case 1 16
ordered_case 3 60 80 100
ordered_case 5 60 70 80 90 100

say "5. SIGTERM: docker stop server (N = 0), docker stop client1 mid-run, compose stop -t 10"
(cd "$proj" && bash generar-compose.sh docker-compose-dev.yaml 0 >/dev/null)
dc up -d >/dev/null 2>&1 || fail "up of the central alone failed"
follow "$work/alone.log" --until 'action: listen' ||
    fail "the central alone did not listen"
stop_started=$SECONDS
docker stop server >/dev/null
((SECONDS - stop_started < 10)) || fail "docker stop server took the whole grace period"
[[ $(exit_code server) == 0 ]] || fail "server exited $(exit_code server) after SIGTERM"
logs_to "$work/alone.log"
grep -q "^server .*action: shutdown | result: success" "$work/alone.log" || fail "server logged no shutdown"
py check "$work/alone.log" --source server
dc down -t 10 >/dev/null 2>&1
echo "   docker stop server: shutdown logged, exit 0 in $((SECONDS - stop_started)) s"

# A second, absent agency keeps the draw from running, so client1 is uploading or waiting
# for it when the signal comes, whatever the timing.
py data "$proj/.data" 99
(cd "$proj" && bash generar-compose.sh docker-compose-dev.yaml 1 >/dev/null)
LOTTERY_AGENCIES=2 dc up -d >/dev/null 2>&1 || fail "up failed"
follow "$work/mid.log" --until 'action: apuesta_recibida' ||
    fail "client1 sent no batch"
stop_started=$SECONDS
docker stop client1 -t 20 >/dev/null
((SECONDS - stop_started < 20)) || fail "docker stop client1 took the whole grace period"
[[ $(exit_code client1) == 0 ]] || fail "client1 exited $(exit_code client1) after SIGTERM"
logs_to "$work/mid.log"
grep -q "^client1 .*action: shutdown | result: success" "$work/mid.log" || fail "client1 logged no shutdown"
grep -q "^client1 .*action: consulta_ganadores" "$work/mid.log" && fail "client1 was not mid-run"
py check "$work/mid.log" --allow-fail --source server --source client1
echo "   docker stop client1 mid-run: shutdown logged, exit 0 in $((SECONDS - stop_started)) s"
dc down -t 10 >/dev/null 2>&1

py data "$proj/.data" 60 80 100
(cd "$proj" && bash generar-compose.sh docker-compose-dev.yaml 3 >/dev/null)
LOTTERY_AGENCIES=4 dc up -d >/dev/null 2>&1 || fail "up failed"
follow "$work/stop.log" --until 'action: apuesta_recibida' ||
    fail "no batch arrived"
stop_started=$SECONDS
dc stop -t 10 >/dev/null 2>&1 || fail "stop failed"
((SECONDS - stop_started < 10)) || fail "compose stop took the whole grace period"
logs_to "$work/stop.log"
for name in server client1 client2 client3; do
    [[ $(exit_code "$name") == 0 ]] || fail "$name exited $(exit_code "$name") after SIGTERM"
    grep -q "^$name .*action: shutdown | result: success" "$work/stop.log" || fail "$name logged no shutdown"
done
py check "$work/stop.log" --allow-fail --source server --source client1 --source client2 --source client3
echo "   compose stop -t 10: 4 containers logged their shutdown and exited 0 in $((SECONDS - stop_started)) s"
dc down -t 10 >/dev/null 2>&1

say "docker e2e passed (${compose[*]})"
