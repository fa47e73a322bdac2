#!/usr/bin/env bash
# The entrypoint of Dockerfile.patroni (runs as the `postgres` user): writes Patroni's
# configuration from the environment and the Compose secrets, then runs Patroni as PID 1.
# Environment (set by docker-compose.ha.yaml):
#   PATRONI_NAME          this node's name, also its host name on the network (pg1, pg2)
#   PATRONI_SCOPE         the cluster's name in etcd (default: lottery)
#   ETCD_HOSTS            etcd's client endpoints, host:port[,host:port…] (default: etcd:2379)
#   POSTGRES_USER, POSTGRES_DB   the superuser the centrals log in as and their database
#                         (both default to lottery)
#   POSTGRES_PASSWORD_FILE       a file whose first line is POSTGRES_USER's password
#   REPLICATION_PASSWORD_FILE    a file whose first line is the `replicator` role's password
# Passwords are read from files only (Compose secrets: `docker inspect` shows none) and
# written to a configuration file only this user can read, in the container's own /tmp.
# On the first start of the cluster, the node that wins the race for etcd's initialize key
# runs initdb (data checksums; POSTGRES_USER as the superuser with its password), then the
# post_bootstrap step creates POSTGRES_DB owned by it; the other node copies the leader with
# pg_basebackup and streams from it. Patroni keeps one of them the leader (its key in etcd,
# ttl 20 s) and the other its synchronous standby (synchronous_mode), rejoins an old leader
# as a replica with pg_rewind (use_pg_rewind, wal_log_hints) and never lets two lead.
set -euo pipefail

fail() {
    echo "patroni-entrypoint: $*" >&2
    exit 2
}

name=${PATRONI_NAME:-}
scope=${PATRONI_SCOPE:-lottery}
etcd=${ETCD_HOSTS:-etcd:2379}
user=${POSTGRES_USER:-lottery}
db=${POSTGRES_DB:-lottery}
# Patroni reads PATRONI_* variables itself and they would override the file: keep only ours.
unset PATRONI_SCOPE

for pair in "PATRONI_NAME=$name" "POSTGRES_USER=$user" "POSTGRES_DB=$db"; do
    [[ ${pair#*=} =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] ||
        fail "${pair%%=*}=\"${pair#*=}\" is invalid: expected a name of letters, digits and _ (not starting with a digit), at most 63"
done
[[ $user != replicator ]] || fail "POSTGRES_USER=replicator is invalid: that name is the replication role's"
[[ $etcd =~ ^[A-Za-z0-9._-]+:[0-9]+(,[A-Za-z0-9._-]+:[0-9]+)*$ ]] ||
    fail "ETCD_HOSTS=\"$etcd\" is invalid: expected host:port[,host:port…]"

# The first line of the file $2 names (variable $1), without a trailing CR.
secret() {
    local var=$1 path=${2:-} value=
    [[ -n $path ]] || fail "$var is not set: expected the path of a file holding the password"
    [[ -r $path ]] || fail "$var=\"$path\" cannot be read: expected a file holding the password"
    IFS= read -r value <"$path" || [[ -n $value ]] ||
        fail "$var=\"$path\" is empty: expected the password on its first line"
    value=${value%$'\r'}
    [[ -n $value ]] || fail "$var=\"$path\" starts with an empty line: expected the password on its first line"
    printf '%s' "$value"
}
[[ -z ${POSTGRES_PASSWORD:-} && -z ${REPLICATION_PASSWORD:-} ]] ||
    fail "POSTGRES_PASSWORD or REPLICATION_PASSWORD is set: expected the passwords in files only (POSTGRES_PASSWORD_FILE, REPLICATION_PASSWORD_FILE)"
password=$(secret POSTGRES_PASSWORD_FILE "${POSTGRES_PASSWORD_FILE:-}")
replication=$(secret REPLICATION_PASSWORD_FILE "${REPLICATION_PASSWORD_FILE:-}")

umask 077
config=/tmp/patroni.yml
# JSON is YAML: python3 (Patroni's own interpreter) quotes every value, passwords included.
NAME=$name SCOPE=$scope ETCD=$etcd SUPERUSER=$user DB=$db PASSWORD=$password \
    REPLICATION=$replication python3 - >"$config" <<'PY'
import json, os
e = os.environ
name = e["NAME"]
config = {
    "scope": e["SCOPE"],
    "name": name,
    "log": {"level": "INFO"},
    "restapi": {"listen": "0.0.0.0:8008", "connect_address": f"{name}:8008"},
    "etcd3": {"hosts": e["ETCD"].split(",")},
    "bootstrap": {
        "dcs": {
            # The leader key lives 20 s (Patroni's minimum) without a refresh: a dead leader's
            # replica takes over within about ttl + loop_wait. loop_wait + 2 * retry_timeout <= ttl.
            "ttl": 20,
            "loop_wait": 2,
            "retry_timeout": 9,
            # A COMMIT returns once the synchronous standby has its WAL, and only a node that
            # was synchronous may be promoted: an acknowledged bet is never lost. Not strict: a
            # leader whose standby is gone acknowledges alone (docs/postgres.md says the cost).
            "synchronous_mode": True,
            "synchronous_mode_strict": False,
            # etcd unreachable: the leader stays the leader while it can reach every other
            # member's REST API (without it, it would demote itself after retry_timeout and
            # one etcd node would stop every write): etcd is needed to fail over, not to run.
            "failsafe_mode": True,
            "maximum_lag_on_failover": 1048576,
            "postgresql": {
                "use_pg_rewind": True,
                "use_slots": True,
                "parameters": {
                    # Durable commits (the defaults, written out on purpose): never turn off.
                    "fsync": "on",
                    "synchronous_commit": "on",
                    "full_page_writes": "on",
                    # pg_rewind needs hint bits WAL-logged (data checksums do it as well).
                    "wal_log_hints": "on",
                    "password_encryption": "scram-sha-256",
                    "max_connections": 100,
                },
            },
        },
        "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        # Creates the database of the centrals, owned by the superuser (its password set by
        # initdb); $1 is Patroni's connection string to the new cluster.
        "post_bootstrap": "/bin/sh -c 'psql \"$1\" -v ON_ERROR_STOP=1 -qc \"CREATE DATABASE \\\"%s\\\" OWNER \\\"%s\\\"\"' post_bootstrap" % (e["DB"], e["SUPERUSER"]),
    },
    "postgresql": {
        "listen": "0.0.0.0:5432",
        "connect_address": f"{name}:5432",
        "data_dir": "/var/lib/postgresql/data/pgdata",
        "bin_dir": "/usr/lib/postgresql/15/bin",
        "pgpass": "/tmp/pgpass",
        # A new replica copies the leader at once (a spread checkpoint would take minutes).
        "basebackup": [{"checkpoint": "fast"}],
        "authentication": {
            "superuser": {"username": e["SUPERUSER"], "password": e["PASSWORD"]},
            "replication": {"username": "replicator", "password": e["REPLICATION"]},
        },
        "pg_hba": [
            "local all all trust",
            "host replication replicator 0.0.0.0/0 scram-sha-256",
            "host all all 0.0.0.0/0 scram-sha-256",
            "host all all ::/0 scram-sha-256",
        ],
    },
    "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
}
print(json.dumps(config, indent=2))
PY
unset password replication
echo "patroni-entrypoint: node $name of cluster $scope (etcd $etcd), superuser $user, database $db"
exec patroni "$config"
