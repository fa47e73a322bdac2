#!/usr/bin/env bash
# Writes a compose file for the central and N agencies (the course's exercise 1):
#   bash generar-compose.sh OUTPUT N        e.g. bash generar-compose.sh docker-compose-dev.yaml 5
# N = 0 writes the central alone. Services and containers are `server` and `client1` … `clientN`;
# agency K reads .data/agency-K.csv. Every file mounts server/config.ini and client/config.yaml
# (edit them between runs, no rebuild). docker-compose.yaml is this script's output for 5.
# generate-compose.sh is the same script under an English name.
set -euo pipefail

usage() {
    echo "usage: $0 OUTPUT N   (N: number of agencies, 0 to 1000)" >&2
    exit 2
}

[[ $# -eq 2 ]] || { echo "error: expected 2 arguments, got $#" >&2; usage; }
output=$1
agencies=$2
[[ -n $output ]] || { echo "error: OUTPUT must not be empty" >&2; usage; }
if ! [[ $agencies =~ ^[0-9]+$ ]] || ((10#$agencies > 1000)); then
    echo "error: N=\"$agencies\" is invalid: expected a whole number from 0 to 1000" >&2
    usage
fi
agencies=$((10#$agencies))
dir=$(dirname -- "$output")
[[ -d $dir && -w $dir ]] || { echo "error: cannot write $output: $dir is not a writable directory" >&2; exit 2; }

if ((agencies > 0)); then
    # The draw waits for every agency; a variable set in the shell or .env may still change it.
    agencies_line="      LOTTERY_AGENCIES: \"\${LOTTERY_AGENCIES:-$agencies}\""
else
    # The central alone: server/config.ini (or the default) says how many agencies to wait for.
    agencies_line="      LOTTERY_AGENCIES: \${LOTTERY_AGENCIES:-}"
fi

{
cat <<EOF
# Written by generar-compose.sh: the central and $agencies agencies. Works with docker compose (v2)
# and docker-compose (v1.29). Configuration: server/config.ini and client/config.yaml (mounted).
# A \${VAR:-} below is empty unless the shell or .env sets VAR, and an empty value counts as
# unset, so the files decide. The bets live inside the server container: each up after a down
# is a new lottery (docker-compose.persist.yaml keeps them across down; see README).

x-client: &client
  image: lottery-client
  build:
    context: .
    dockerfile: Dockerfile.client
  volumes:
    - ./.data:/data:ro
    - ./client/config.yaml:/etc/lottery/config.yaml:ro
  networks:
    - lottery
  depends_on:
    server:
      condition: service_healthy

x-client-env: &client-env
  CLI_CONFIG_FILE: /etc/lottery/config.yaml
  CLI_SERVER_ADDRESS: \${CLI_SERVER_ADDRESS:-}
  CLI_BATCH_MAXAMOUNT: \${CLI_BATCH_MAXAMOUNT:-}
  CLI_LOG_LEVEL: \${CLI_LOG_LEVEL:-}
  CLI_LOOP_PERIOD: \${CLI_LOOP_PERIOD:-}
  CLI_CONNECT_TIMEOUT: \${CLI_CONNECT_TIMEOUT:-}

services:
  server:
    container_name: server
    image: lottery-server
    build:
      context: .
      dockerfile: Dockerfile.server
    environment:
      SERVER_PORT: \${SERVER_PORT:-}
      SERVER_IP: \${SERVER_IP:-}
      SERVER_LISTEN_BACKLOG: \${SERVER_LISTEN_BACKLOG:-}
      LOGGING_LEVEL: \${LOGGING_LEVEL:-}
$agencies_line
      BETS_FILE: /var/lib/lottery/bets.csv
      LOTTERY_CONFIG_FILE: /etc/lottery/config.ini
      HTTP_ADDR: 0.0.0.0:8080
    volumes:
      - ./server/config.ini:/etc/lottery/config.ini:ro
    networks:
      - lottery
    ports:
      # The status page (docs/operations.md#status-page): on a free host port of 127.0.0.1, so
      # \`up\` never fails on a taken port; \`docker compose port server 8080\` says which. Set
      # LOTTERY_STATUS_PORT (shell or .env) to pin it.
      - "127.0.0.1:\${LOTTERY_STATUS_PORT:-}:8080"
    healthcheck:
      # Asks /readyz (HTTP_ADDR): start-up recovery done and the store reachable, not only an
      # open port. start_period: a long recovery is "starting", not "unhealthy".
      test: ["CMD", "/usr/local/bin/lottery-server", "healthcheck"]
      interval: 500ms
      timeout: 5s
      retries: 60
      start_period: 10m
EOF
for ((k = 1; k <= agencies; k++)); do
cat <<EOF

  client$k:
    <<: *client
    container_name: client$k
    environment:
      <<: *client-env
      CLI_ID: "$k"
      CLI_DATA_FILE: /data/agency-$k.csv
EOF
done
cat <<EOF

networks:
  lottery:
    driver: bridge
EOF
} > "$output"

missing=()
for ((k = 1; k <= agencies; k++)); do
    [[ -f .data/agency-$k.csv ]] || missing+=("agency-$k.csv")
done
if ((agencies > 0)); then
    echo "wrote $output: server + client1..client$agencies"
else
    echo "wrote $output: server alone"
fi
if ((${#missing[@]})); then
    echo "note: .data/ lacks ${missing[*]}; add those files before docker compose up" >&2
fi
