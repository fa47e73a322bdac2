#!/usr/bin/env bash
# End-to-end check of docker-compose.ha.yaml (issues 13 and 23): two centrals on a PostgreSQL
# database replicated by Patroni (etcd, nodes pg1 and pg2), five agencies that know both
# centrals, under Compose v2 or v1:
#   COMPOSE=v2 bash scripts/docker-e2e-ha.sh     # `docker compose` (the default)
#   COMPOSE=v1 bash scripts/docker-e2e-ha.sh     # `docker-compose` 1.29
# It builds the four images (etcd, patroni, server, client), copies the checkout to a scratch
# directory (as a fresh clone), and there:
#   1. `up -d` with the default dataset (79,070 bets): agencies 1, 2, 5 start on server1, 3 and 4
#      on server2; every agency exits 0 with its winners (52/40/41/44/43), both centrals stored
#      batches, exactly one created the schema, one `sorteo` in all (the other central restores
#      it), one `draw` row, 79,070 rows in `bets`, and `lottery-server export -` in a central's
#      container writes exactly the rows of the agency files; `docker inspect` of the nodes and
#      the centrals shows no password (it comes from Compose secrets); the leader has its
#      synchronous standby (pg_stat_replication: sync) and both centrals logged it
#      (`replication: synchronous`);
#   1b. `down` and `up -d` again on the same database volume: the agencies learn from `Welcome`
#      that everything is stored, nothing is stored again, the same winners and checks;
#   2. failover: a new lottery (`down -v`, `up -d`) with the agencies paced (loop.period 25ms, so
#      an upload takes over 2.5 s); once agencies 1, 2 and 5 have batches acknowledged by server1
#      (their progress lines), `docker kill server1` (SIGKILL). Each of them logs its move to
#      server2 and finishes there: the same checks as in 1, the draw recorded by server2 only;
#      then `docker start server1` finds the lottery drawn in the database.
#   3. the database leader restarts: a new lottery, paced (100 ms a batch); once every agency
#      has batches acknowledged, `docker restart` of the Patroni leader (SIGTERM: Patroni stops
#      PostgreSQL and gives up its key, the standby takes over at once); the centrals refuse
#      what they cannot commit, the agencies retry and finish (a batch acknowledged after the
#      restart: it was mid-upload): the same checks as in 1.
#   4. database failover: a new lottery, paced (100 ms a batch); once every agency has batches
#      acknowledged, `docker kill` (SIGKILL) of the Patroni leader; Patroni promotes the standby
#      once the dead leader's key expires (ttl 20 s); every agency finishes: the same checks as
#      in 1. It logs the seconds from the kill to the new leader and to the first batch
#      acknowledged after it (there must be one: the kill was mid-upload). Then `docker start`
#      of the old leader: it rejoins as the synchronous standby
#      on the new timeline (pg_rewind when its WAL went past the promotion point).
#   5. failover back, on the same cluster: a new lottery (the schema dropped, the centrals and
#      agencies recreated), paced; `docker kill` of the new leader mid-upload; the rejoined
#      node is promoted; the same checks as in 1.
# Every `action:` line is parsed by the graders' rule (scripts/e2e_logs.py); the first run may
# not log `result: fail`.
# Everything it creates (containers, the network, the database volume, the scratch directory,
# dangling layers unless E2E_PRUNE=0) is removed on exit, also on failure (keeping the logs in
# /tmp/lottery-e2e-ha-failed/); it stops itself after E2E_TIMEOUT seconds (default 900: five lotteries,
# two of them waiting ~20 s each for Patroni to promote, take 320–360 s on a loaded machine).
# Needs a Docker engine, the local base images (../shared/docker/prepare-local-images.sh; with
# COMPOSE_V2=1 it installs Compose v2 too), python3 and git. It uses the container names
# `etcd`, `pg1`, `pg2`, `server1`, `server2` and `clientK`, so nothing else may use them
# meanwhile.
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
# Patroni's view of the cluster (`patronictl list` as JSON), asked of node $1.
members() { docker exec "$1" patronictl -c /tmp/patroni.yml list -f json 2>/dev/null; }
# The running leader's name, as a running node ($1, else either) sees it; nothing if none.
leader() {
    local node
    for node in ${1:-pg1 pg2}; do
        members "$node" | python3 -c '
import json, sys
for m in json.load(sys.stdin):
    if m.get("Role") == "Leader" and m.get("State") == "running":
        print(m["Member"])
' 2>/dev/null && return 0
    done
    return 0
}
# Waits (up to $2 seconds) until node $1 is the running leader.
wait_leader() {
    local node=$1 deadline=$((SECONDS + $2))
    until [[ $(leader "$node") == "$node" ]]; do
        ((SECONDS < deadline)) || fail "$node did not become the leader within $2 s"
        sleep 0.2
    done
}
# Waits (up to $2 seconds) until node $1 is the leader's synchronous standby, streaming.
wait_sync_standby() {
    local node=$1 deadline=$((SECONDS + $2)) state
    until state=$(members "$node" | python3 -c '
import json, sys
m = {x["Member"]: x for x in json.load(sys.stdin)}[sys.argv[1]]
print(m.get("Role"), m.get("State"), m.get("TL"))
'  "$node" 2>/dev/null) && [[ $state =~ ^Sync\ Standby\ (running|streaming)\  ]] &&
        [[ $(docker exec "$(leader "$node")" psql -U lottery -d lottery -Atc \
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$node'" 2>/dev/null) == sync ]]; do
        ((SECONDS < deadline)) || fail "$node did not become the synchronous standby within $2 s (${state:-no answer})"
        sleep 0.2
    done
}
psql_value() { docker exec "$(leader)" psql -U lottery -d lottery -Atc "$1"; }

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

for name in etcd pg1 pg2 server1 server2 client1; do
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
for name in pg1 pg2 server1 server2; do
    docker inspect "$name" >"$work/inspect-$name.json" || fail "docker inspect $name failed"
    grep -Eq '"(POSTGRES_PASSWORD|LOTTERY_DATABASE_URL)=|lottery:lottery@' "$work/inspect-$name.json" &&
        fail "docker inspect $name shows the database password"
done
echo "   docker inspect shows no password (the nodes and the centrals read it from secrets)"
# Synchronous replication: an acknowledged bet is on both nodes.
first_leader=$(leader)
[[ $first_leader == pg[12] ]] || fail "no running leader (patronictl list: $(members pg1))"
standby=pg$((3 - ${first_leader#pg}))
wait_sync_standby "$standby" 30
[[ -n $(psql_value "SHOW synchronous_standby_names") ]] || fail "the leader has no synchronous_standby_names"
[[ $(grep -Ec "^server[12] +\| .*action: database \| result: success \| .*replication: synchronous" "$work/ha-1.log") == 2 ]] ||
    echo "   note: a central started before Patroni named the synchronous standby (it logged another replication mode)"
echo "   $first_leader leads, $standby is its synchronous standby (pg_stat_replication: sync)"
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

# The seconds from $1 (date +%s.%N: a kill or a restart of the leader) to the first batch a
# central acknowledged at least $2 seconds after it (default 0).
first_ack_after() {
    local base=$1 since central t best=
    since=$(python3 -c "print(f'{$base + ${2:-0}:.3f}')")
    for central in server1 server2; do
        t=$(docker logs -t --since "$(date -u -d "@$since" +%Y-%m-%dT%H:%M:%S.%NZ)" "$central" 2>&1 |
            grep -E "action: apuesta_recibida \| result: success" | head -n 1 | cut -d' ' -f1) || true
        [[ -n $t ]] || continue
        t=$(date -d "$t" +%s.%N)
        if [[ -z $best ]] || (($(python3 -c "print(int($t < $best))"))); then best=$t; fi
    done
    [[ -n $best ]] && python3 -c "print(f'{$best - $base:.1f}')"
}

say "3. the database leader restarts (docker restart) while every agency uploads"
round_started=$SECONDS
CLI_LOOP_PERIOD=100ms dc up -d >/dev/null 2>&1 || fail "up failed"
for ((k = 1; k <= agencies; k++)); do
    wait_log "client$k" 60 "action: upload \| result: in_progress \| .*acked: [1-9]"
done
if log_has server1 "action: sorteo" || log_has server2 "action: sorteo"; then
    fail "a central drew before the database restarted"
fi
node=$(leader)
[[ $node == pg[12] ]] || fail "no running leader before the restart"
docker restart -t 10 "$node" >/dev/null || fail "docker restart $node failed"
restarted_at=$(date +%s.%N)
say "   the leader $node restarted $((SECONDS - round_started)) s after up; now $(leader) leads"
wait_clients
# The restart was mid-upload: a batch was acknowledged after it.
first_ack_after "$restarted_at" >/dev/null ||
    fail "no batch was acknowledged after the restart: $node restarted after the upload"
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

# Kills the leader (SIGKILL) once every agency has batches acknowledged, waits for the other
# node to lead, logs how long that and the next acknowledgement took; the round's checks.
# $1: the round's name (its log file), $2: the round's start (SECONDS).
kill_leader_mid_upload() {
    local round=$1 round_started=$2 old new killed_at promoted first_ack k
    for ((k = 1; k <= agencies; k++)); do
        wait_log "client$k" 60 "action: upload \| result: in_progress \| .*acked: [1-9]"
    done
    if log_has server1 "action: sorteo" || log_has server2 "action: sorteo"; then
        fail "a central drew before the leader was killed"
    fi
    old=$(leader)
    [[ $old == pg[12] ]] || fail "no running leader before the kill"
    new=pg$((3 - ${old#pg}))
    killed_at=$(date +%s.%N)
    docker kill "$old" >/dev/null || fail "docker kill $old failed"
    say "   the leader $old killed $((SECONDS - round_started)) s after up"
    wait_leader "$new" 90
    promoted=$(python3 -c "print(f'{$(date +%s.%N) - $killed_at:.1f}')")
    wait_clients
    say "   the agencies finished $((SECONDS - round_started)) s after up"
    # The kill must have been mid-upload: a batch was acknowledged after the failover. From 1 s
    # after the kill: a COMMIT that returned just before it may be logged just after, and
    # nothing can be acknowledged between the kill and the promotion (the dead leader is gone,
    # the standby takes no writes), which takes longer than 1 s (the leader key's ttl).
    first_ack=$(first_ack_after "$killed_at" 1) ||
        fail "no batch was acknowledged after the failover: $old was killed after the upload"
    echo "   $new promoted ${promoted} s after the kill (seen by polling patronictl); the first batch" \
        "acknowledged after the failover ${first_ack} s after the kill"
    logs_to "$work/$round.log"
    # Not a normal run: the centrals log the batches the dead leader could not take.
    py check "$work/$round.log" --allow-fail --source server1 --source server2
    [[ $(grep -Ec "^server[12] +\| .*action: sorteo \| result: success" "$work/$round.log") == 1 ]] ||
        fail "not exactly one sorteo"
    check_lottery "$work/$round.log" server2
    echo "   $(grep -Ec "^server[12] +\| .*action: group_commit \| result: fail" "$work/$round.log") failed group commits" \
        "during the failover, retried by the agencies; nothing lost or stored twice"
}

# Starts the killed node $1 again and waits for it to rejoin as the synchronous standby of
# the new leader, on its timeline (pg_rewind when the old WAL went past the promotion point).
rejoin() {
    local node=$1 began=$SECONDS
    docker start "$node" >/dev/null || fail "docker start $node failed"
    wait_sync_standby "$node" 120
    local how="its WAL ended at the promotion point: no rewind needed"
    log_has "$node" "running pg_rewind from" && how="pg_rewind ran"
    echo "   $node rejoined as the synchronous standby in $((SECONDS - began)) s ($how);" \
        "timeline $(psql_value "SELECT timeline_id FROM pg_control_checkpoint()")"
}

# The centrals' and agencies' agencies recreated, the schema dropped on the leader: a new
# lottery on the same database cluster (its nodes and their roles unchanged).
new_lottery_same_cluster() {
    local services=(server1 server2) k
    for ((k = 1; k <= agencies; k++)); do services+=("client$k"); done
    dc rm -fs "${services[@]}" >/dev/null 2>&1 || fail "rm of the centrals and agencies failed"
    psql_value "SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public" >/dev/null ||
        fail "dropping the schema failed"
    CLI_LOOP_PERIOD=100ms CLI_CONNECT_TIMEOUT=120s dc up -d --no-deps "${services[@]}" >/dev/null 2>&1 ||
        fail "up of the centrals and agencies failed"
}

# The agencies wait through the failover (the dead leader's key lives 20 s): CLI_CONNECT_TIMEOUT
# (30 s by default, without progress) is raised so a loaded machine cannot end an agency first.
# Paced at 100 ms a batch (an upload takes over 10 s), as in 3, so the kill, once all five
# agencies have batches acknowledged, still finds them uploading on a slow machine.
say "4. database failover: docker kill of the Patroni leader while every agency uploads"
round_started=$SECONDS
CLI_LOOP_PERIOD=100ms CLI_CONNECT_TIMEOUT=120s dc up -d >/dev/null 2>&1 || fail "up failed"
first=$(leader)
kill_leader_mid_upload ha-4 "$round_started"
rejoin "$first"

say "5. failover back on the same cluster: a new lottery, docker kill of the new leader"
round_started=$SECONDS
new_lottery_same_cluster
kill_leader_mid_upload ha-5 "$round_started"
[[ $(leader) == "$first" ]] || fail "$first does not lead after the failover back"
echo "   $first, rejoined after round 4, leads again"
dc down -t 10 -v >/dev/null 2>&1 || fail "down -v failed"

say "docker e2e (several centrals) passed (${compose[*]}) in $((SECONDS - started)) s"
