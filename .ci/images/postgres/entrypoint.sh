#!/bin/sh
# First start on an empty volume: initdb with POSTGRES_USER as the superuser (password
# POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE), create POSTGRES_DB, accept password logins from the network.
set -eu
# As in the official image, POSTGRES_X_FILE reads X from a file (a Docker secret).
for var in POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB; do
    eval "file=\${${var}_FILE:-}"
    if [ -n "$file" ]; then
        eval "$var=\$(cat \"\$file\")"
    fi
done
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -qc "CREATE DATABASE \"$db\""
    fi
    pg_ctl -w stop >/dev/null
fi
if [ "$1" = postgres ]; then
    shift
    exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
