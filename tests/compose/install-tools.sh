#!/usr/bin/env bash
# What tests/compose needs on a Debian 12 machine, from Debian's archive only: the Docker engine
# (docker.io), debootstrap (for the stand-in base image) and the docker compose v2 plugin.
# Bookworm packages only compose v1; Debian 13 (trixie) packages v2 as one static Go binary
# (docker-compose, depends on libc6 alone): it is downloaded from trixie with a throwaway apt
# configuration and unpacked as the CLI plugin, so the machine's own sources stay bookworm.
# Idempotent; run as root.  Does not start dockerd (the test harness does, when needed).
set -euo pipefail

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

if ! docker compose version >/dev/null 2>&1; then
    work="$(mktemp -d)"
    trap 'rm -rf "${work}"' EXIT
    mkdir -p "${work}/lists/partial" "${work}/cache/archives/partial"
    # The Debian archive this machine's apt already uses (its first URIs:/deb line ending in /debian).  `|| true`:
    # with pipefail, grep's exit 2 for a missing sources.list (deb822-only machines) would end the script here.
    mirror="${DEBIAN_MIRROR:-$(grep -h -o -E '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[^[:space:]]+' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | awk '{print $NF}' | grep -m1 -E '/debian/?$' || true)}"
    [[ -n "${mirror}" ]] || { echo "no Debian archive in this machine's apt sources: set DEBIAN_MIRROR" >&2; exit 1; }
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror} trixie main" \
        > "${work}/sources.list"
    apt_opts=(-qq -o "Dir::Etc::SourceList=${work}/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=${work}/lists" -o "Dir::Cache=${work}/cache" -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update
    (cd "${work}" && apt-get "${apt_opts[@]}" download docker-compose)
    dpkg-deb -x "${work}"/docker-compose_*.deb "${work}/unpacked"
    install -D -m 755 "${work}/unpacked/usr/libexec/docker/cli-plugins/docker-compose" \
        /usr/libexec/docker/cli-plugins/docker-compose
fi
docker compose version
