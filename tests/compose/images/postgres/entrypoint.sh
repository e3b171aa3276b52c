#!/usr/bin/env bash
# First start: initdb with POSTGRES_USER as the superuser and POSTGRES_PASSWORD as its
# password (scram), then create POSTGRES_DB.  Every start: run the server on PGPORT (5432
# unless set), listening on listen_addresses (all unless POSTGRES_LISTEN is set).
set -euo pipefail
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=${POSTGRES_USER}}" "${PGPORT:=5432}"
export PGPORT
if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
    if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
        echo "ERROR! POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD}" > "${pwfile}"
    initdb -D "${PGDATA}" -U "${POSTGRES_USER}" --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="${pwfile}" --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "${pwfile}"
    echo "host all all all scram-sha-256" >> "${PGDATA}/pg_hba.conf"
    if [[ "${POSTGRES_DB}" != "postgres" ]]; then
        pg_ctl -D "${PGDATA}" -w -o "-c listen_addresses=''" start >/dev/null
        createdb -U "${POSTGRES_USER}" "${POSTGRES_DB}"
        pg_ctl -D "${PGDATA}" -w -m fast stop >/dev/null
    fi
fi
if [[ "${1:-}" == "postgres" ]]; then
    shift
    exec postgres -D "${PGDATA}" -c "listen_addresses=${POSTGRES_LISTEN:-*}" -p "${PGPORT}" "$@"
fi
exec "$@"
