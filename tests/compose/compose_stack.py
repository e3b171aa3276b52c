"""The docker compose stack of this checkout, started for real on this machine.

No image registry is reachable here, so the base images the stack names are built locally first
(``StandinImages``): a Debian bookworm root made with debootstrap and imported, and from it a stand-in
for the official Airflow image and one for the metadata database (tests/compose/images).  The stack
itself is the project's own docker-compose.yaml and Dockerfile, from a copy of the checkout's files as
``git clone`` would give them, with ``.env`` written from ``.env.example`` as the README asks, plus
tests/compose/docker-compose.test.yaml: host networking, every service name mapped to 127.0.0.1, and
ports clear of the machine's own services.  All traffic stays on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
IMAGES = Path(__file__).resolve().parent / "images"
TEST_OVERRIDE = Path("tests") / "compose" / "docker-compose.test.yaml"

DEBIAN_IMAGE = "pgbackup-standin/debian:bookworm"
AIRFLOW_IMAGE = "pgbackup-standin/airflow:3.3.2-python3.11"
POSTGRES_IMAGE = "pgbackup-standin/postgres:15-bookworm"
def machine_debian_mirror() -> str:
    """The Debian archive this machine's own apt uses (its first ``URIs:`` / ``deb`` line naming a ``/debian`` archive)."""
    import glob
    import re as _re

    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            continue
        for uri in _re.findall(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, flags=_re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    raise RuntimeError("no Debian archive in this machine's apt sources: set DEBIAN_MIRROR")


DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR") or machine_debian_mirror()

# The ports docker-compose.test.yaml gives the services on the host's network.
API_URL = "http://127.0.0.1:28080"
SOURCE_PORT = 25432


def run(argv: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


class DockerDaemon:
    """The Docker engine: the running one, else ``dockerd`` started here (as root) and stopped again by ``stop``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def unavailable_reason(self) -> str | None:
        """None once the engine and the compose v2 plugin answer; else why the stack cannot be tested here."""
        if shutil.which("docker") is None:
            return "no docker CLI on PATH (apt-get install docker.io; see tests/compose/install-tools.sh)"
        if not self._answers():
            reason = self._start()
            if reason:
                return reason
        if run(["docker", "compose", "version"], timeout=30, check=False).returncode != 0:
            return "the docker compose v2 plugin is missing (tests/compose/install-tools.sh installs it)"
        return None

    def _answers(self) -> bool:
        return run(["docker", "info"], timeout=30, check=False).returncode == 0

    def _start(self) -> str | None:
        if shutil.which("dockerd") is None:
            return "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
        if os.geteuid() != 0:
            return "no Docker engine answers and only root can start dockerd"
        log = open(self.workdir / "dockerd.log", "w")
        self.proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"dockerd could not start (exit {self.proc.returncode}): {(self.workdir / 'dockerd.log').read_text()[-500:]}"
            if self._answers():
                return None
            time.sleep(0.5)
        self.stop()
        return "dockerd did not answer within 60 s"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], timeout=30, check=False).returncode == 0


class StandinImages:
    """The base images docker-compose.yaml and the Dockerfile need, built from Debian's archive and PyPI."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def build(self) -> None:
        if not image_exists(DEBIAN_IMAGE):
            self._import_debian()
        for name, folder in ((AIRFLOW_IMAGE, "airflow"), (POSTGRES_IMAGE, "postgres")):
            run(["docker", "build", "--build-arg", f"DEBIAN_IMAGE={DEBIAN_IMAGE}", "-t", name, str(IMAGES / folder)], timeout=1800)

    def _import_debian(self) -> None:
        if shutil.which("debootstrap") is None:
            raise RuntimeError("debootstrap is needed to make the Debian base image (apt-get install debootstrap)")
        root = self.workdir / "rootfs"
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR], timeout=1800)
        # The certificate authorities this machine trusts beyond Debian's (e.g. a proxy's), so that
        # pip inside the builds reaches PyPI the way pip on the host does.
        local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        if local_cas:
            target = root / "usr/local/share/ca-certificates"
            target.mkdir(parents=True, exist_ok=True)
            for ca in local_cas:
                shutil.copy(ca, target / ca.name)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import",
             "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
             "--change", "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
             "-", DEBIAN_IMAGE],
            stdin=tar.stdout, capture_output=True, text=True, timeout=600,
        )
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import of the debootstrap root failed: {imported.stderr[-2000:]}")
        shutil.rmtree(root, ignore_errors=True)


def clean_checkout(destination: Path) -> Path:
    """The checkout's files as a fresh clone would have them (tracked and new, never ignored ones such as .env)."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], timeout=60, cwd=PROJECT).stdout
    for name in filter(None, listed.split("\0")):
        source = PROJECT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def uncommitted_changes() -> list[str]:
    """The checkout's files that differ from its HEAD (modified, added, deleted or new): they go into the image too.

    A stack test that fails on a shared checkout may be testing someone's work in progress; the test says which files.
    """
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], timeout=60, cwd=PROJECT).stdout
    return [line[3:] for line in status.splitlines() if line.strip()]


def env_from_example(example: str, values: dict[str, str]) -> str:
    """``.env.example`` with the given variables filled in (uncommented where needed) and the others as shipped."""
    remaining = dict(values)
    lines = []
    for line in example.splitlines():
        match = re.match(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", line)
        if match and match.group(1) in remaining:
            name = match.group(1)
            lines.append(f"{name}={quote_env(remaining.pop(name))}")
        else:
            lines.append(line)
    lines.extend(f"{name}={quote_env(value)}" for name, value in remaining.items())
    return "\n".join(lines) + "\n"


def quote_env(value: str) -> str:
    return "'" + value + "'" if re.search(r"[^A-Za-z0-9_./:@=,+-]", value) else value


class ComposeStack:
    """One ``docker compose`` project of a clean copy of the checkout, started with the test override."""

    def __init__(self, env: dict[str, str]) -> None:
        self.dir = clean_checkout(Path(tempfile.mkdtemp(prefix="pgbackup-compose-")))
        self.name = f"pgbackup-test-{uuid.uuid4().hex[:8]}"
        (self.dir / ".env").write_text(env_from_example((self.dir / ".env.example").read_text(), env))
        (self.dir / ".env").chmod(0o600)
        self.timings: dict[str, float] = {}

    def compose(self, *args: str, timeout: float = 900, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run(["docker", "compose", "-p", self.name, "-f", "docker-compose.yaml", "-f", str(TEST_OVERRIDE), *args],
                   timeout=timeout, cwd=self.dir, check=check, env=env)

    def up(self) -> None:
        started = time.monotonic()
        self.compose("build")
        self.timings["build"] = time.monotonic() - started
        started = time.monotonic()
        self.compose("up", "-d", "--wait", "--wait-timeout", "600")
        self.timings["up --wait"] = time.monotonic() - started

    def exec(self, service: str, *argv: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """``docker compose exec`` with ``env`` passed by name only (``-e NAME``), so no value is on a command line."""
        names = [arg for name in (env or {}) for arg in ("-e", name)]
        return self.compose("exec", "-T", *names, service, *argv, timeout=timeout, check=False, env=env)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "200", check=False).stdout

    def task_errors(self) -> str:
        """The error events (with their tracebacks) of every task log in the stack's ``logs/`` so far: what a failed run said."""
        found = []
        for path in sorted((self.dir / "logs").glob("dag_id=*/**/*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("level") in ("error", "critical"):
                    detail = json.dumps(event.get("error_detail"))[:3000] if event.get("error_detail") else ""
                    found.append(f"{path.relative_to(self.dir / 'logs')}: {event.get('event')} {detail}")
        return "\n".join(found)

    def down_command(self) -> str:
        """What ``down`` runs, as a command to paste (a kept stack: PGBACKUP_COMPOSE_KEEP)."""
        return (f"cd {self.dir} && docker compose -p {self.name} -f docker-compose.yaml -f {TEST_OVERRIDE} "
                f"down -v --remove-orphans --timeout 30 && rm -rf {self.dir}")

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class RestApi:
    """Airflow's REST API as an operator's script uses it: a token from /auth/token, then bearer requests."""

    def __init__(self, base_url: str = API_URL) -> None:
        self.base_url = base_url
        self.access_token: str | None = None

    def request(self, method: str, path: str, body: dict | None = None, *, token: str | None = None):
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = token or self.access_token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def sign_in(self, username: str, password: str) -> int:
        status, answer = self.request("POST", "/auth/token", {"username": username, "password": password})
        if status in (200, 201):
            self.access_token = answer["access_token"]
        return status

    def trigger(self, dag_id: str) -> str:
        status, answer = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {}})
        if status not in (200, 201):
            raise RuntimeError(f"triggering {dag_id} answered {status}: {answer}")
        return answer["dag_run_id"]

    def wait_until_idle(self, dag_ids, timeout: float = 900) -> None:
        """Until no run of ``dag_ids`` is queued or running (a fresh deployment starts each DAG's latest interval)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = []
            for dag_id in dag_ids:
                status, answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running")
                if status != 200 or answer["total_entries"]:
                    busy.append(dag_id)
            if not busy:
                return
            time.sleep(2)
        raise TimeoutError(f"runs of {busy} still going after {timeout:.0f} s")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        """The run's final state (success or failed), polled until it has one."""
        deadline = time.monotonic() + timeout
        quoted = urllib.request.quote(run_id, safe="")
        while time.monotonic() < deadline:
            status, answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")
            if status == 200 and answer["state"] in ("success", "failed"):
                return answer["state"]
            time.sleep(2)
        raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")
