#!/usr/bin/env bash
# Many agencies as real processes: one central and N `lottery-client` processes, each with its
# own generated file of BETS bets, all started as soon as the central listens.
#   scripts/bench-agencies.sh [N] [BETS]   (defaults 1000 and 100; extra variables such as
#                                          LOTTERY_MAX_CONNECTIONS pass through to the central)
# Every agency checks its winners against its own file and exits 0 only if they are exactly its
# own: the script fails unless all N do. It prints the wall time (central start → last agency
# exit), the bets per second, the time from the last `ready_for_lottery` to the `sorteo` and from
# the `sorteo` to the last agency's exit, and the central's peak RSS and open files (sampled
# every 50 ms). Every wait is on an event (a log line read from a pipe, a process exit).
# The open-files limit of this shell must allow N client sockets and the central's N + places.
set -euo pipefail
cd "$(dirname "$0")/.."
agencies=${1:-1000}
bets=${2:-100}
cargo build --release --quiet --bin lottery-server --bin lottery-client --example datagen

now_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }
stamp() { while IFS= read -r line; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$line"; done; }
last_stamp() { local needle=$1; shift; grep -h -- "$needle" "$@" | cut -d' ' -f1 | sort -n | tail -1; }
ms() { echo $((($2 - $1) / 1000)); }

dir=$(mktemp -d)
data=target/bench-agencies/$agencies-$bets
if [[ ! -f $data/agency-$agencies.csv ]]; then
    mkdir -p "$data"
    ./target/release/examples/datagen "$data" "$agencies" "$bets" 2026 >/dev/null
fi
start=$(now_us)
coproc CENTRAL {
    SERVER_IP=127.0.0.1 SERVER_PORT=0 LOTTERY_AGENCIES=$agencies BETS_FILE="$dir/bets.csv" \
        exec ./target/release/lottery-server
}
server=$CENTRAL_PID
exec {central_out}<&"${CENTRAL[0]}"
address=
while IFS= read -r line <&"$central_out"; do
    printf '%s %s\n' "${EPOCHREALTIME/./}" "$line" >>"$dir/server.log"
    if [[ $line == *"action: listen | result: success"* ]]; then
        address=${line##*address: }
        break
    fi
done
[[ -n $address ]] || { echo "the central did not start; logs in $dir" >&2; exit 1; }
stamp <&"$central_out" >>"$dir/server.log" &
drain=$!
exec {central_out}<&-
# The central's open files, sampled until the file `$dir/done` appears.
(
    peak=0
    while [[ ! -e $dir/done ]]; do
        n=$(find "/proc/$server/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        ((n > peak)) && peak=$n && echo "$peak" >"$dir/peak_fds"
        sleep 0.05
    done
) &
sampler=$!
for ((k = 1; k <= agencies; k++)); do
    CLI_ID=$k CLI_SERVER_ADDRESS=$address CLI_DATA_FILE=$data/agency-$k.csv \
        ./target/release/lottery-client >"$dir/client$k.log" 2>&1 &
done
failed=0
for ((k = 1; k <= agencies; k++)); do wait -n || failed=$((failed + 1)); done
end=$(now_us)
rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$server/status")
touch "$dir/done"
wait "$sampler" || true
kill -TERM "$server"
wait "$server" || failed=$((failed + 1))
wait "$drain" || true
((failed == 0)) || { echo "$failed processes failed; logs in $dir" >&2; exit 1; }
ready=$(last_stamp "action: ready_for_lottery" "$dir/server.log")
draw=$(last_stamp "action: sorteo | result: success" "$dir/server.log")
total=$(ms "$start" "$end")
echo "agencies: $agencies × $bets bets, every one exited 0 with exactly its own winners"
echo "wall: $total ms (central start → last agency exit), $((agencies * bets * 1000 / (total > 0 ? total : 1))) bets/s"
echo "last ready → sorteo: $(ms "$ready" "$draw") ms; sorteo → last agency exit: $(ms "$draw" "$end") ms"
echo "central peak RSS: $rss MiB; peak open files: $(cat "$dir/peak_fds" 2>/dev/null || echo unknown)"
rm -rf "$dir"
