"""The Docker deployment files, checked as files: Docker is not needed to run these.

docker-compose.yaml, Dockerfile and .env.example must agree with each other and with
the code (the settings pgbackup reads, the Airflow version requirements.txt pins),
and .env.example must never carry a real credential.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from pgbackup.config.connections import pg_target_from_env, remote_from_env
from pgbackup.config.settings import BackupSettings

PROJECT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = PROJECT / "docker-compose.yaml"
DOCKERFILE = PROJECT / "Dockerfile"
ENV_EXAMPLE = PROJECT / ".env.example"
SETTINGS_SOURCE = PROJECT / "plugins" / "pgbackup" / "config" / "settings.py"
REQUIREMENTS = PROJECT / "requirements-runtime.txt"
TEST_REQUIREMENTS = PROJECT / "requirements-test.txt"

AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-init", "airflow-worker"}
LONG_RUNNING_AIRFLOW_SERVICES = AIRFLOW_SERVICES - {"airflow-init"}
CELERY_SERVICES = {"redis", "airflow-worker"}
EXPECTED_SERVICES = {"postgres"} | AIRFLOW_SERVICES | CELERY_SERVICES
SUPPORTED_PG_MAJORS = range(13, 19)

# `${NAME...}` or `$NAME` that Compose fills in; `$$` is a literal dollar for the shell.
_COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
# `NAME=value`, or `# NAME=value` for a documented but commented-out alternative.
_ENV_ASSIGNMENT = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


# ---------------------------------------------------------------------- helpers
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def services() -> dict[str, dict]:
    return compose()["services"]


def scalars(node):
    """Every string in a parsed YAML document (comments are gone, merges resolved)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from scalars(key)
            yield from scalars(value)
    elif isinstance(node, list):
        for item in node:
            yield from scalars(item)
    elif isinstance(node, str):
        yield node


def compose_variables() -> set[str]:
    found = set()
    for text in scalars(compose()):
        for braced, bare in _COMPOSE_VARIABLE.findall(text):
            found.add(braced or bare)
    return found


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def env_example(*, include_commented: bool = False) -> dict[str, list[str]]:
    """Assignments in .env.example, name -> values (a commented alternative adds a value)."""
    found: dict[str, list[str]] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ENV_ASSIGNMENT.match(line.strip())
        if match and (include_commented or not match["commented"]):
            found.setdefault(match["name"], []).append(unquote(match["value"]))
    return found


def active_env() -> dict[str, str]:
    """The environment a copy of .env.example gives (its uncommented lines)."""
    return {name: values[-1] for name, values in env_example().items()}


def settings_names() -> set[str]:
    return set(re.findall(r"[\"'](BACKUP_[A-Z0-9_]+)[\"']", SETTINGS_SOURCE.read_text(encoding="utf-8")))


def volume_targets(service: dict) -> dict[str, str]:
    """Container path -> host path (or named volume) of a service's short-syntax volumes."""
    targets = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2] if not volume.startswith("${") else _split_variable_volume(volume)
        targets[target] = source
    return targets


def _split_variable_volume(volume: str) -> tuple[str, str]:
    # "${BACKUP_HOST_DIR:-./data/backups}:/opt/airflow/backups": the source holds a colon of its own.
    end = volume.index("}") + 1
    return volume[:end], volume[end + 1 :].split(":")[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


def pinned_airflow_version() -> str:
    match = re.search(r"^apache-airflow==([\w.]+)\s*$", REQUIREMENTS.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "requirements-runtime.txt pins no apache-airflow version"
    return match.group(1)


# ---------------------------------------------------------------------- docker-compose.yaml
def test_compose_file_parses_as_yaml_with_every_expected_service():
    assert set(services()) == EXPECTED_SERVICES


def test_the_image_is_built_once_by_airflow_init_and_run_by_every_airflow_service():
    common = compose()["x-airflow-common"]
    assert "build" not in common
    built = {name for name, service in services().items() if "build" in service}
    assert built == {"airflow-init"}
    assert services()["airflow-init"]["build"] == "."
    for name in AIRFLOW_SERVICES:
        assert services()[name]["image"] == common["image"], name
        # Built here, never in a registry: a pull could only fail, or fetch someone else's image.
        assert services()[name]["pull_policy"] == "never", name


def test_the_image_carries_the_dags_and_plugins_and_the_services_mount_only_logs_and_backups():
    for name in AIRFLOW_SERVICES:
        service = services()[name]
        targets = volume_targets(service)
        assert set(targets) == {"/opt/airflow/logs", "/opt/airflow/backups"}, name
        assert targets["/opt/airflow/logs"] == "./logs", name
        backups = service["environment"]["BACKUP_LOCAL_DIR"]
        assert backups == "/opt/airflow/backups", name
        assert targets[backups].startswith("${BACKUP_HOST_DIR"), name
    copies = {args.split()[-2]: args.split()[-1] for instruction, args in dockerfile_instructions() if instruction == "COPY"}
    assert copies["dags"] == "/opt/airflow/dags" and copies["plugins"] == "/opt/pgbackup/plugins"
    assert (PROJECT / "dags").is_dir() and (PROJECT / "plugins" / "pgbackup").is_dir()


def test_the_image_installs_the_project_package_with_backupctl_and_the_provider():
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    assert any("pip install --no-cache-dir --no-deps /opt/pgbackup" in args and "backupctl --help" in args
               and "airflow providers list | grep -q rclone" in args for args in runs)


def test_env_example_points_backupctl_on_the_host_at_the_compose_stacks_backup_folder():
    """backupctl's own default (the user's data folder) is not the stack's: .env.example says to set BACKUP_LOCAL_DIR
    to the host folder the containers write, and names the same folder as the compose file's default."""
    source = volume_targets(compose()["x-airflow-common"])["/opt/airflow/backups"]
    default = re.fullmatch(r"\$\{BACKUP_HOST_DIR:-(.+)\}", source).group(1)
    example = (PROJECT / ".env.example").read_text()
    assert f"# BACKUP_LOCAL_DIR={default}" in example.splitlines()
    assert f"BACKUP_HOST_DIR={default}" in example.splitlines()
    assert BackupSettings.from_env({"BACKUP_LOCAL_DIR": default}).local_dir == Path(default)


def test_every_line_of_env_reaches_every_airflow_container():
    for name in AIRFLOW_SERVICES:
        assert services()[name]["env_file"] == [".env"], name


def test_the_connections_nothing_works_without_are_required():
    env = compose()["x-airflow-common"]["environment"]
    for conn in ("AIRFLOW_CONN_BACKUP_SOURCE", "AIRFLOW_CONN_BACKUP_REMOTE"):
        assert env[conn].startswith(f"${{{conn}:?"), f"{conn} should be required (${{VAR:?message}})"


def test_airflow_runs_with_the_local_executor_its_api_server_and_no_examples_by_default():
    env = compose()["x-airflow-common"]["environment"]
    assert re.fullmatch(r"\$\{AIRFLOW__CORE__EXECUTOR:-LocalExecutor\}|LocalExecutor", env["AIRFLOW__CORE__EXECUTOR"])
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].split("@")[1].startswith("postgres/")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_components_share_the_secrets_that_sign_task_tokens_and_sessions():
    env = compose()["x-airflow-common"]["environment"]
    for name in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert env[name].startswith(f"${{{name}:?"), f"{name} must come from .env, the same for every container"


def test_long_running_services_have_a_command_a_healthcheck_and_restart_always():
    for name in LONG_RUNNING_AIRFLOW_SERVICES:
        service = services()[name]
        assert service.get("command"), name
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "always", name
    for name in ("postgres", "redis"):
        assert services()[name]["healthcheck"]["test"], name
        assert services()[name]["restart"] == "always", name


def test_healthchecks_probe_what_each_component_serves():
    def probe(name: str) -> str:
        test = services()[name]["healthcheck"]["test"]
        return " ".join(test) if isinstance(test, list) else test

    assert "http://localhost:8080/api/v2/version" in probe("airflow-apiserver")
    assert "http://localhost:8974/health" in probe("airflow-scheduler")
    assert "--job-type DagProcessorJob" in probe("airflow-dag-processor")
    assert "--job-type TriggererJob" in probe("airflow-triggerer")
    assert "pg_isready" in probe("postgres")
    assert services()["airflow-apiserver"]["command"] == "api-server"
    assert services()["airflow-worker"]["command"] == "celery worker"


def test_airflow_services_wait_for_a_healthy_database_and_a_finished_init():
    for name in AIRFLOW_SERVICES:
        depends = services()[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert depends["airflow-init"]["condition"] == "service_completed_successfully", name


def test_sign_in_is_the_official_files_fab_admin_created_by_init_with_the_password_from_env():
    common = compose()["x-airflow-common"]["environment"]
    assert common["AIRFLOW__CORE__AUTH_MANAGER"] == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    init = services()["airflow-init"]
    assert "restart" not in init
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert init["environment"]["_AIRFLOW_WWW_USER_PASSWORD"].startswith("${_AIRFLOW_WWW_USER_PASSWORD:?")
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    assert "/entrypoint airflow db check-migrations" in script
    assert "CHANGE_ME" in script, "init refuses the example's placeholder password"
    # env_file would hand the password to every container: the shared environment blanks it.
    assert common["_AIRFLOW_WWW_USER_PASSWORD"] == ""
    assert active_env()["_AIRFLOW_WWW_USER_PASSWORD"] == "CHANGE_ME"


def test_a_stopping_scheduler_gets_time_to_stop_its_backups_cleanly():
    period = services()["airflow-scheduler"]["stop_grace_period"]
    assert compose_duration_seconds(compose_default(period)) >= 60


def test_celery_services_start_only_with_the_celery_profile():
    for name, service in services().items():
        if name in CELERY_SERVICES:
            assert service.get("profiles") == ["celery"], name
        else:
            assert "profiles" not in service, f"{name} must start without any profile"
    assert services()["airflow-worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def compose_default(value: str) -> str:
    """The default of ``${NAME:-default}``."""
    match = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-(.*)\}", str(value))
    assert match, f"{value!r} is not ${{NAME:-default}}"
    return match.group(1)


def compose_duration_seconds(text: str) -> float:
    """A Compose duration such as ``1h``, ``1h30m`` or ``90s``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a Compose duration: {text!r}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * unit[u] for n, u in parts)


def test_celery_workers_run_tasks_through_the_api_server_with_the_shared_secrets():
    worker = services()["airflow-worker"]
    assert worker["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    for name in ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CELERY__BROKER_URL",
                 "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert worker["environment"][name] == compose()["x-airflow-common"]["environment"][name], name
    assert int(compose_default(worker["environment"]["AIRFLOW__CELERY__WORKER_CONCURRENCY"])) >= 1


def test_a_stopping_celery_worker_gets_time_to_finish_its_backups():
    worker = services()["airflow-worker"]
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"  # SIGTERM reaches Celery: warm shutdown
    grace = compose_duration_seconds(compose_default(worker["stop_grace_period"]))
    assert grace >= 600, "Compose's default (10 s) would kill every running backup"
    assert compose_duration_seconds(active_env()["AIRFLOW_WORKER_STOP_GRACE_PERIOD"]) == grace


def test_celery_visibility_timeout_outlasts_the_backup_task_timeout():
    value = compose()["x-airflow-common"]["environment"]["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]
    timeout = BackupSettings.from_env({}).task_timeout.total_seconds()
    assert int(compose_default(value)) > timeout
    assert int(active_env()["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) > timeout


def test_celery_worker_healthcheck_pings_the_app_of_the_celery_provider_the_image_installs():
    import importlib.util

    assert re.search(r"^apache-airflow-providers-celery==[\w.]+\s*$", REQUIREMENTS.read_text(encoding="utf-8"), re.MULTILINE)
    probe = " ".join(services()["airflow-worker"]["healthcheck"]["test"])
    module = re.search(r"--app ([\w.]+)\.app\b", probe).group(1)
    assert importlib.util.find_spec(module) is not None, module
    assert 'inspect ping -d "celery@$${HOSTNAME}"' in probe


def test_named_volumes_are_declared():
    declared = set(compose()["volumes"])
    used = {
        source
        for service in services().values()
        for target, source in volume_targets(service).items()
        if not source.startswith((".", "/", "$"))
    }
    assert used <= declared


# ---------------------------------------------------------------------- .env.example
def test_every_variable_compose_reads_is_documented_in_env_example():
    missing = compose_variables() - set(env_example(include_commented=True))
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_every_backup_setting_is_documented_in_env_example():
    names = settings_names()
    assert len(names) >= 17, f"the regex over settings.py found too few names: {sorted(names)}"
    missing = names - set(env_example(include_commented=True))
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_env_example_backup_values_are_the_settings_defaults():
    env = {k: v for k, v in active_env().items() if k.startswith("BACKUP_") and k in settings_names()}
    assert BackupSettings.from_env(env) == BackupSettings.from_env({})


def test_env_example_connections_are_usable_by_pgbackup():
    examples = env_example(include_commented=True)
    env = active_env()
    source = pg_target_from_env("backup_source", env)
    assert (source.dbname, source.host, source.port) == ("vendure", "db.example.com", 5432)
    drive = remote_from_env("backup_remote", env)
    assert (drive.type, drive.root) == ("drive", "DamnedDesigns-Backups")
    remotes = {remote_from_env("backup_remote", {"AIRFLOW_CONN_BACKUP_REMOTE": value}).type for value in examples["AIRFLOW_CONN_BACKUP_REMOTE"]}
    assert remotes == {"drive", "local"}
    for value in examples["AIRFLOW_CONN_SMTP_DEFAULT"]:
        if value:
            assert json.loads(value)["conn_type"] == "smtp"


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$")
_SECRET_FIELDS = {
    "password", "pass", "password2", "token", "access_token", "refresh_token", "client_secret",
    "secret_access_key", "access_key_id", "key", "service_account_credentials", "sas_url", "account_key",
}
_TOKEN_SHAPES = [
    re.compile(r"ya29\.[\w-]+"),  # Google OAuth access token
    re.compile(r"1//0[\w-]{20,}"),  # Google OAuth refresh token
    re.compile(r"GOCSPX-[\w-]+"),  # Google OAuth client secret
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bxox[abpr]-[\w-]+"),
]
_HIGH_ENTROPY = re.compile(r"[A-Za-z0-9+/=_-]{32,}")


def is_placeholder(value) -> bool:
    text = str(value).strip()
    return text == "" or "CHANGE_ME" in text or (text.startswith("<") and text.endswith(">"))


def secrets_in(name: str, value: str, allowed_passwords: set[str]) -> list[str]:
    """What in one assignment looks like a real credential (empty when nothing does)."""
    found = [f"{name}: {shape.pattern}" for shape in _TOKEN_SHAPES if shape.search(value)]
    for run in _HIGH_ENTROPY.findall(value):
        if re.search(r"[a-z]", run) and re.search(r"[A-Z]", run) and re.search(r"\d", run):
            found.append(f"{name}: random-looking {run[:6]}...")
    if _SECRET_NAME.search(name) and not is_placeholder(value):
        found.append(f"{name} has a value; leave it empty or a placeholder")
    if value.startswith("{"):
        data = json.loads(value)

        def walk(node):
            if isinstance(node, dict):
                for key, item in node.items():
                    if key.lower() in _SECRET_FIELDS and not isinstance(item, (dict, list)) and not is_placeholder(item):
                        found.append(f"{name}: field {key!r} is not a placeholder")
                    walk(item)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(data)
    elif "://" in value:
        password = urlsplit(value).password
        if password and not is_placeholder(password) and password not in allowed_passwords:
            found.append(f"{name}: the URI holds a password")
    return found


def metadata_db_password() -> set[str]:
    """The fixed, internal credentials docker-compose.yaml itself defines for Airflow's own database."""
    return {compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]}


def test_env_example_holds_no_real_secrets():
    allowed = metadata_db_password()
    problems = [
        problem
        for name, values in env_example(include_commented=True).items()
        for value in values
        for problem in secrets_in(name, value, allowed)
    ]
    assert not problems, problems


@pytest.mark.parametrize(
    "name, value",
    [
        ("AIRFLOW_CONN_BACKUP_REMOTE", '{"conn_type":"rclone","extra":{"type":"drive","token":"{\\"access_token\\":\\"ya29.a0AfB_byC\\"}"}}'),
        ("AIRFLOW_CONN_BACKUP_REMOTE", '{"conn_type":"rclone","extra":{"type":"s3","secret_access_key":"wJalrXUtnFEMI"}}'),
        ("AIRFLOW_CONN_BACKUP_SOURCE", "postgresql://backup_reader:hunter2@db.example.com:5432/vendure"),
        ("AIRFLOW__API_AUTH__JWT_SECRET", "3q2+7w=="),
        ("BACKUP_PREFIX", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo"),
    ],
)
def test_secret_check_catches_a_pasted_credential(name, value):
    assert secrets_in(name, value, metadata_db_password())


def test_secret_check_accepts_the_placeholders():
    assert not secrets_in("AIRFLOW_CONN_BACKUP_SOURCE", "postgresql://backup_reader:CHANGE_ME@db.example.com:5432/vendure", set())
    assert not secrets_in("_AIRFLOW_WWW_USER_PASSWORD", "", set())


# ---------------------------------------------------------------------- Dockerfile
def test_dockerfile_base_image_is_the_airflow_version_requirements_pin():
    froms = [args for instruction, args in dockerfile_instructions() if instruction == "FROM"]
    assert froms == ["${AIRFLOW_BASE_IMAGE}"]
    base = next(args for instruction, args in dockerfile_instructions() if instruction == "ARG" and args.startswith("AIRFLOW_BASE_IMAGE="))
    match = re.fullmatch(r"apache/airflow:(?P<version>[\w.]+)-python(?P<python>3\.\d+)", base.split("=", 1)[1])
    assert match, base
    assert match["version"] == pinned_airflow_version()


def test_dockerfile_installs_the_runtime_requirements_without_the_venv_constraints_as_the_airflow_user():
    instructions = dockerfile_instructions()
    user = "root"
    pip_runs = []
    for instruction, args in instructions:
        if instruction == "USER":
            user = args.strip()
        elif instruction == "RUN" and re.search(r"\bpip install\b.*-r \S*requirements-runtime\.txt", args):
            pip_runs.append((user, args))
    assert len(pip_runs) == 1, "one RUN pip install -r requirements-runtime.txt"
    user, args = pip_runs[0]
    assert user == "airflow", "pip must run as the airflow user"
    assert "--no-cache-dir" in args
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in args, "Airflow stays the base image's version"
    assert "pip check" in args
    assert "constraints.txt" not in args
    assert instructions[-1] != ("USER", "root")


def test_runtime_requirements_hold_no_test_tools_and_no_constraints():
    text = REQUIREMENTS.read_text(encoding="utf-8")
    assert not re.search(r"^-c ", text, re.MULTILINE)
    names = {re.split(r"[=<>\[ ]", line)[0].lower() for line in text.splitlines() if line and not line.startswith(("#", "-"))}
    assert not names & {"pytest", "aiosmtpd", "playwright"}
    tests = TEST_REQUIREMENTS.read_text(encoding="utf-8")
    assert "-r requirements.txt" in tests
    assert {"pytest", "aiosmtpd", "playwright"} <= {line.split("==")[0] for line in tests.splitlines()}


def test_dockerfile_installs_pg_dump_for_every_supported_major_and_zstd_as_root():
    user, apt_runs, majors, source = "", [], None, None
    for instruction, args in dockerfile_instructions():
        if instruction == "USER":
            user = args.strip()
        elif instruction == "ARG" and args.startswith("PG_MAJORS="):
            majors = {int(m) for m in unquote(args.split("=", 1)[1]).split()}
        elif instruction == "ARG" and args.startswith("PG_CLIENT_SOURCE="):
            source = args.split("=", 1)[1]
        elif instruction == "RUN" and "apt-get install" in args:
            apt_runs.append((user, args))
    assert majors is not None and set(SUPPORTED_PG_MAJORS) <= majors
    # PGDG unless a build asks otherwise (only tests/compose does, where PGDG is unreachable).
    assert source == "pgdg"
    assert len(apt_runs) == 1
    user, run = apt_runs[0]
    assert user == "root"
    assert "apt.postgresql.org" in run
    assert "postgresql-client-${major}" in run and "${PG_MAJORS}" in run
    assert re.search(r"\bzstd\b", run)


def test_the_build_context_is_an_allow_list_that_keeps_secrets_and_backups_out():
    lines = [line for line in (PROJECT / ".dockerignore").read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"requirements-runtime.txt", "pyproject.toml", "README.md", "dags", "plugins"}
    sources = {source for instruction, args in dockerfile_instructions() if instruction in ("COPY", "ADD")
               for source in [a for a in args.split() if not a.startswith("--")][:-1]}
    assert sources == allowed
