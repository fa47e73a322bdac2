#!/usr/bin/env bash
# The entrypoint of Dockerfile.postgres (runs as the `postgres` user).
# On the first start (no cluster in $PGDATA) it creates one: initdb with POSTGRES_USER as the
# superuser and POSTGRES_PASSWORD as its password (SCRAM-SHA-256; or the first line of the file
# POSTGRES_PASSWORD_FILE names, a Compose secret, which `docker inspect` does not show), the
# database POSTGRES_DB, connections from the network by password, local socket connections
# inside the container trusted (the health check, `docker exec … psql`). The cluster is made in a scratch directory
# beside $PGDATA and renamed into place only when whole: a start interrupted half-way leaves
# no half-made cluster, and the next start begins again. Then, and on every later start, it
# runs PostgreSQL in the foreground as PID 1 (docker stop: SIGINT, a fast shutdown).
# fsync and synchronous_commit stay on: a central acknowledges a batch only after its COMMIT,
# so a committed transaction must survive a crash of the machine.
set -euo pipefail

user=${POSTGRES_USER:-lottery}
db=${POSTGRES_DB:-lottery}
data=${PGDATA:?PGDATA must name the data directory}

fail() {
    echo "postgres-entrypoint: $*" >&2
    exit 2
}

if [[ ! -s $data/PG_VERSION ]]; then
    # Names go into SQL as identifiers: plain ones only.
    for pair in "POSTGRES_USER=$user" "POSTGRES_DB=$db"; do
        [[ ${pair#*=} =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] ||
            fail "${pair%%=*}=\"${pair#*=}\" is invalid: expected a name of letters, digits and _ (not starting with a digit), at most 63"
    done
    if [[ -n ${POSTGRES_PASSWORD_FILE:-} ]]; then
        [[ -z ${POSTGRES_PASSWORD:-} ]] ||
            fail "POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are both set: expected one of them"
        [[ -r $POSTGRES_PASSWORD_FILE ]] ||
            fail "POSTGRES_PASSWORD_FILE=\"$POSTGRES_PASSWORD_FILE\" cannot be read: expected a file holding the password"
        IFS= read -r POSTGRES_PASSWORD <"$POSTGRES_PASSWORD_FILE" || [[ -n $POSTGRES_PASSWORD ]] ||
            fail "POSTGRES_PASSWORD_FILE=\"$POSTGRES_PASSWORD_FILE\" is empty: expected the password on its first line"
        POSTGRES_PASSWORD=${POSTGRES_PASSWORD%$'\r'}
    fi
    [[ -n ${POSTGRES_PASSWORD:-} ]] ||
        fail "POSTGRES_PASSWORD is empty: expected the password of POSTGRES_USER (\"$user\"), which the centrals use to connect"
    if [[ -e $data ]]; then
        rmdir "$data" 2>/dev/null ||
            fail "$data is not empty but holds no cluster (no PG_VERSION): expected an empty volume or a PostgreSQL 15 data directory; not touching it"
    fi
    scratch=$data.init
    rm -rf "$scratch"
    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    echo "postgres-entrypoint: creating the cluster in $data (user $user, database $db)"
    initdb --pgdata="$scratch" --username="$user" --pwfile="$pwfile" --encoding=UTF8 \
        --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    cat >>"$scratch/postgresql.conf" <<'CONF'

# docker-compose.ha.yaml: the centrals connect over the compose network.
listen_addresses = '*'
password_encryption = scram-sha-256
# Durable commits (the defaults, written out on purpose): never turn these off.
fsync = on
synchronous_commit = on
full_page_writes = on
CONF
    cat >"$scratch/pg_hba.conf" <<'HBA'
# TYPE  DATABASE  USER  ADDRESS  METHOD
# Inside the container: the health check and `docker exec … psql`.
local   all       all            trust
# Everyone else (the centrals on the compose network): a password.
host    all       all   0.0.0.0/0  scram-sha-256
host    all       all   ::/0       scram-sha-256
HBA
    if [[ $db != postgres ]]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\";" |
            postgres --single -j -D "$scratch" postgres >/dev/null
    fi
    sync -f "$scratch" 2>/dev/null || sync
    mv "$scratch" "$data"
    sync -f "$(dirname "$data")" 2>/dev/null || sync
    echo "postgres-entrypoint: cluster ready"
fi

exec postgres -D "$data" "$@"
