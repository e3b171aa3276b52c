#!/usr/bin/env bash
# Entrypoint of the stand-in Airflow image: the behaviour of the official image's entrypoint
# that docker-compose.yaml relies on, written for the test (see the Dockerfile beside it).
#   bash ... / python ...      run that, after the database check
#   [airflow] COMMAND ...      run `airflow COMMAND ...`
#   _AIRFLOW_DB_MIGRATE=true   `airflow db migrate` first
#   _AIRFLOW_WWW_USER_CREATE=true  create the admin user (FAB auth manager) from
#                              _AIRFLOW_WWW_USER_USERNAME / _AIRFLOW_WWW_USER_PASSWORD
set -euo pipefail

if [[ "$(id -g)" != "0" ]]; then
    echo "ERROR! Run the image with group id 0 (user: \"<uid>:0\")" >&2
    exit 1
fi
umask 0002

if ! whoami >/dev/null 2>&1 && [[ -w /etc/passwd ]]; then
    echo "default:x:$(id -u):0:default user:${AIRFLOW_USER_HOME_DIR}:/sbin/nologin" >> /etc/passwd
    export HOME="${AIRFLOW_USER_HOME_DIR}"
fi

wait_for_database() {
    local tries="${CONNECTION_CHECK_MAX_COUNT:-20}"
    until airflow db check >/dev/null 2>&1; do
        tries=$((tries - 1))
        if (( tries <= 0 )); then
            echo "ERROR! The metadata database did not answer" >&2
            airflow db check
            exit 1
        fi
        sleep "${CONNECTION_CHECK_SLEEP_TIME:-3}"
    done
}

create_admin_user() {
    local password="${_AIRFLOW_WWW_USER_PASSWORD:-}"
    unset _AIRFLOW_WWW_USER_PASSWORD
    if [[ -z "${password}" ]]; then
        echo "ERROR! _AIRFLOW_WWW_USER_PASSWORD is not set" >&2
        exit 1
    fi
    if airflow config get-value core auth_manager | grep -q FabAuthManager; then
        # The password goes through the environment, never argv (ps would show it).
        AIRFLOW_STANDIN_PASSWORD="${password}" python - <<'PY'
import os
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

username = os.environ.get("_AIRFLOW_WWW_USER_USERNAME", "admin")
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    role = sm.find_role(os.environ.get("_AIRFLOW_WWW_USER_ROLE", "Admin"))
    user = sm.find_user(username=username)
    if user is None:
        sm.add_user(username, "Airflow", "Admin", os.environ.get("_AIRFLOW_WWW_USER_EMAIL", "airflowadmin@example.com"),
                    role, os.environ["AIRFLOW_STANDIN_PASSWORD"])
        print(f"Created user {username}")
    else:
        print(f"User {username} exists")
PY
    else
        echo "Skipping user creation: the auth manager is not FAB's"
    fi
}

COMMAND="${1:-}"
case "${COMMAND}" in
    api-server|scheduler|dag-processor|triggerer) wait_for_database ;;
esac
if [[ -n "${_AIRFLOW_DB_MIGRATE:-}" ]]; then
    airflow db migrate
fi
if [[ -n "${_AIRFLOW_WWW_USER_CREATE:-}" ]]; then
    create_admin_user
fi
if [[ "${COMMAND}" == "bash" ]]; then
    shift; exec /bin/bash "$@"
elif [[ "${COMMAND}" == "python" ]]; then
    shift; exec python "$@"
fi
if [[ "${COMMAND}" == "airflow" ]]; then
    shift
fi
if [[ "$#" -eq 0 && -n "${_AIRFLOW_DB_MIGRATE:-}" ]]; then
    exit 0
fi
exec airflow "$@"
