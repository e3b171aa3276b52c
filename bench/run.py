"""The project's benchmark: full, incremental and restore against bare pg_dump / pg_restore, at several sizes, with the targets.

The issue "Incrementals that cost what changed" (#12) sets targets that only a measurement
can settle, each a ratio measured in one run:

- an incremental after a 1 % change takes ≤ 10 % of the full's wall time, after a 0.1 % change ≤ 5 %;
- the full, library path, takes ≤ 1.2× ``pg_dump -Fc | rclone rcat`` and stores no more bytes;
- restoring the full, with its check, takes ≤ 1.3× a bare ``pg_restore -j N``;
- a DAG run triggered on a running scheduler adds ≤ 5 s to the library's full;
- peak memory stays ≤ 200 MB at every size, and flat.

It also reports what a ``BACKUP_INCREMENTAL_SCHEDULE`` of every 15 minutes costs in CPU per
day (96 incrementals after a 0.1 % change each, against one full), and how every figure grows
with the database and with the change, fitted and projected to a 100 GB database.

This script measures all of it in one run on one machine and prints it side by side, each
target marked met or missed, so a change to the library is judged by numbers. It is a
benchmark, not a test: it asserts nothing and exits 0 whatever it measured.

What one run does. The sample shop (``sample_shop``) is seeded at every scale of
``--scales`` (scale 100 ≈ 380 MB, 300 ≈ 1 GB on disk) into scratch databases, from child
processes. Every round then works, at each scale, on a fresh copy of the seeded database
(``CREATE DATABASE ... TEMPLATE``), so rounds start alike however much the last one changed:

1. full backups, in an order rotated every round: the bare baseline; the library path
   (``BackupCapture.full`` → rclone upload → verify → manifest, what the DAG's tasks do); at the
   largest scale only, ``bin/backupctl full`` (the ``pg_full_backup`` DAG through ``airflow
   dags test``) and then the same DAG triggered through the REST API on a running api-server,
   scheduler and dag-processor (``bench/airflow_scheduler.py``; their start-up is not timed);
2. restores into empty databases: bare ``pg_restore -j N`` of the baseline's file, and the
   library's full through ``ChainRestore`` (download, sha256, pg_restore, fingerprint check);
3. four incrementals, each after ``mutate_sample_shop`` changed 0.1 %, 1 %, 10 % and 1 % of
   the rows, then a restore of the full + those 4 incrementals;
4. ``--quarter-hours`` more incrementals on that chain, each after a 0.1 % change: a sample of
   a day of 15-minute incrementals, whose median CPU × 96 is the CPU per day.

What is derived. The targets are judged at the largest scale, with ratios of figures of the
same run. Every figure is fitted over the scales as ``y = a · size^b`` (``bench/growth.py``;
size = the tables, their indexes and TOAST) and projected to 100 GB; the incrementals'
growth with the change is fitted over 0.1, 1 and 10 % at each scale.

How it measures. Every variant runs in its own process (this script with ``--run-one``)
that reports its wall time, its CPU (its own plus that of every child it waited for:
pg_dump, rclone, pg_restore, Airflow) and its peak RSS — that of the largest single process:
itself (``VmHWM``) or a child (``getrusage``, the counter ``/usr/bin/time -f %M`` reads).
So no variant's memory hides behind another's, nor behind this script's. Linux starts a
child's getrusage peak at the size of the process that started it, so a tool smaller than
the measuring process (bare pg_restore) shows that process's size, ~40 MB. PostgreSQL's
side is measured apart (``bench/server_cpu.py``): the CPU of the backends connected to the
measured databases, read from ``/proc`` while the variant runs ("server CPU"; what it counts
and misses is in that module). Medians of ``--rounds`` rounds are reported; ratios are ratios
of medians. The machine facts printed first include the load average: on a shared machine
wall times move with it, so compare the ratios of one run, not runs.

Run from the repository root (``make bench`` runs the first line)::

    .venv/bin/python bench/run.py                                      # scales 10, 40, 100, 1 round: 7 minutes on 2 loaded cores
    .venv/bin/python bench/run.py --scales 30,100,300 --rounds 3       # up to 1 GB, the issue's size: about an hour
    .venv/bin/python bench/run.py --scales 1,2                         # a check that it all works: 2-3 minutes

The tables go to stdout, the same numbers (and every round's) to ``bench/results/run.json``,
and the output of every measured process (the library's and Airflow's logs) to
``bench/results/run.log`` (the running Airflow's component logs to ``bench/results/airflow/``).
The scratch databases (``pgbackup_bench_<random>_*``) are dropped at the end, also after an
error, Ctrl-C or SIGTERM; ``--keep-db`` keeps the seeded ones. Backups, dumps and Airflow's
home live in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

PROJECT = Path(__file__).resolve().parent.parent  # the library comes from the venv (`make venv` installs the project)

from psycopg2 import sql  # noqa: E402

from growth import fit_fixed_plus_linear, fit_power_law  # noqa: E402
from pgbackup.capture.capture import BackupCapture  # noqa: E402
from pgbackup.capture.captured import CapturedBackup  # noqa: E402
from pgbackup.capture.compression import Compression  # noqa: E402
from pgbackup.capture.incremental import changed_rows_condition  # noqa: E402
from pgbackup.model.catalog import Catalog  # noqa: E402
from pgbackup.model.layout import BackupLayout  # noqa: E402
from pgbackup.model.manifest import BackupManifest  # noqa: E402
from pgbackup.postgres.tables import list_tables  # noqa: E402
from pgbackup.postgres.target import PgTarget, PgTools, tools_for_server  # noqa: E402
from pgbackup.restore.chain import ChainRestore, choose_chain  # noqa: E402
from rclone_provider.child_process import ChildProcess  # noqa: E402
from rclone_provider.client import Rclone, RemoteConfig, find_rclone  # noqa: E402
from sample_shop import mutate_sample_shop, seed_sample_shop  # noqa: E402
from server_cpu import ServerCpu  # noqa: E402

RESULTS = PROJECT / "bench" / "results" / "run.json"
LOG = RESULTS.with_name("run.log")
AIRFLOW_LOGS = RESULTS.with_name("airflow")
LAYOUT = BackupLayout("database")
# The changes before each incremental, as fractions of the rows; the restore of the
# full + 4 incrementals replays this whole chain.  The first three give the growth with the change.
FRACTIONS = (0.001, 0.01, 0.1, 0.01)
TENTH_PERCENT, ONE_PERCENT = 0, 1
# A BACKUP_INCREMENTAL_SCHEDULE of every 15 minutes, each after 0.1 % of the rows changed.
INCREMENTALS_PER_DAY = 96
DAG_ID = "pg_full_backup"
# Tasks of the DAG that the library path does not run, so Airflow's share is not all Airflow's.
DAG_ONLY_TASKS = ("backup.check_archive", "backup.retention_remote", "backup.retention_local")
PROJECTED_BYTES = 100e9  # the projection's size: tables, indexes and TOAST (Bench.data_size)
MB = 1e6


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and where its output is."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="10,40,100",
                        help="comma-separated sample shop scales; targets are judged at the largest, growth fitted over all "
                             "(100 ≈ 380 MB, 300 ≈ 1 GB on disk; default: 10,40,100)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported (default: 1)")
    parser.add_argument("--keep-db", action="store_true", help="keep the seeded scratch databases")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432", help="server to use; any database in the URL is ignored")
    parser.add_argument("--skip-airflow", action="store_true", help="do not run the DAG through Airflow (no Airflow overhead measured)")
    parser.add_argument("--skip-scheduler", action="store_true", help="measure the `airflow dags test` path only, not a run on a running scheduler")
    parser.add_argument("--quarter-hours", type=int, default=3,
                        help="after the chain, this many more incrementals each after a 0.1 %% change: a sample of the "
                             "15-minute schedule's day, so the CPU per day is a median and drift along the chain shows (default: 3)")
    parser.add_argument("--airflow-env", action="append", default=[], metavar="AIRFLOW__SECTION__KEY=VALUE",
                        help="an Airflow setting for the DAG runs, repeatable (they otherwise get this project's settings and "
                             "nothing inherited), e.g. AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.1")
    parser.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)  # internal: measure one variant, spec on stdin
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the scratch databases are dropped and children stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.run_one:
        run_one(json.load(sys.stdin))
        return
    try:
        args.scales = sorted({int(scale) for scale in args.scales.split(",")})
    except ValueError:
        parser.error(f"--scales must be comma-separated whole numbers, got {args.scales!r}")
    if len(args.scales) < 2 or args.scales[0] < 1 or args.rounds < 1:
        parser.error("--scales needs at least two distinct scales of 1 or more (growth is fitted over them), --rounds at least 1")
    try:
        args.airflow_env = airflow_settings(args.airflow_env)
    except ValueError as exc:
        parser.error(str(exc))
    bench = Bench(args)
    try:
        report = bench.run()
    finally:
        bench.cleanup()
    print_report(report)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(PROJECT)}; the measured processes' output is in {LOG.relative_to(PROJECT)}")


def airflow_settings(pairs: list[str]) -> dict[str, str]:
    """``--airflow-env`` values as a dict: each ``AIRFLOW__SECTION__KEY=VALUE``, else ValueError saying which is not."""
    settings = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not re.fullmatch(r"AIRFLOW__[A-Z0-9_]+?__[A-Z0-9_]+", name):
            raise ValueError(f"--airflow-env takes AIRFLOW__SECTION__KEY=VALUE, got {pair!r}")
        settings[name] = value
    return settings


# -- the measured side: one variant in its own process ---------------------------------------


def run_one(spec: dict) -> None:
    """Run ``spec["operation"]`` and write its wall time, CPU and peak RSS (plus what it returns) to ``spec["result"]``."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cpu, wall = time.process_time(), time.perf_counter()
    measured = OPERATIONS[spec["operation"]](spec)
    wall = time.perf_counter() - wall
    own, children = own_peak_rss_kib(), resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss is in KiB; for RUSAGE_CHILDREN it is the largest single child's, not a sum.
    measured.update(
        wall_s=wall,
        cpu_s=time.process_time() - cpu + children.ru_utime + children.ru_stime,
        peak_rss_mb=max(own, children.ru_maxrss) * 1024 / MB,
        own_rss_mb=own * 1024 / MB,
    )
    Path(spec["result"]).write_text(json.dumps(measured))


def own_peak_rss_kib() -> int:
    """This process's peak RSS, ``VmHWM``: getrusage's would start at the size of the process that started it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError("/proc/self/status has no VmHWM line: peak memory is measured on Linux only")


def _client(root: str) -> Rclone:
    """A local-directory rclone remote named ``bench`` (``RCLONE_CONFIG_BENCH_TYPE=local``)."""
    return Rclone(RemoteConfig.from_extra("bench", {"type": "local", "root": root}))


def _capture(spec: dict) -> BackupCapture:
    return BackupCapture(
        PgTarget(**spec["pg"]), PgTools(Path(spec["tools"]["bin_dir"]), spec["tools"]["major"], spec["tools"]["version"]),
        Compression(), local_dir=Path(spec["local_dir"]), prefix=LAYOUT.prefix, server_version=spec["server_version"],
    )


def _publish(captured: CapturedBackup, client: Rclone) -> BackupManifest:
    """What the DAG's upload → verify → commit_manifest tasks do (as ``publish`` in tests/pgbackup/test_incremental.py)."""
    client.upload(captured.path, captured.object_path)
    method = client.verify(captured.object_path, size=captured.bytes, sha256=captured.sha256)
    manifest = captured.manifest(verified_method=method)
    client.put_bytes(manifest.to_json(), LAYOUT.manifest_path(manifest.kind, manifest.id))
    return manifest


def op_baseline_dump(spec: dict) -> dict:
    """``pg_dump -Fc | rclone rcat``: the bare way to get a compressed dump onto a remote."""
    rclone_env = {**os.environ, "RCLONE_CONFIG": os.devnull, "RCLONE_CONFIG_BENCH_TYPE": "local"}
    log = logging.getLogger("baseline")
    with PgTarget(**spec["pg"]).libpq_env() as env, \
            ChildProcess([spec["pg_dump"], "--format=custom", "--no-password"], env=env, log=log) as dump, \
            ChildProcess([find_rclone(), "rcat", f"bench:{spec['object']}"], env=rclone_env, log=log, stdin=dump.stdout, stdout=sys.stderr) as rcat:
        dump.stdout.close()  # rclone alone reads the pipe, so pg_dump sees it close if rclone dies
        codes = rcat.wait(), dump.wait()
    if any(codes):
        raise BenchError(f"pg_dump | rclone rcat failed with exit codes {codes}")
    return {}


def op_library_full(spec: dict) -> dict:
    manifest = _publish(_capture(spec).full(), _client(spec["remote"]))
    return {"backup_id": manifest.id, "bytes": manifest.artifact.bytes, "uncompressed_bytes": manifest.uncompressed_bytes}


def op_dag_full(spec: dict) -> dict:
    """``bin/backupctl full``: pg_full_backup through ``airflow dags test``, every task of it."""
    argv = [sys.executable, str(PROJECT / "bin" / "backupctl"), "full"]
    with ChildProcess(argv, env=spec["env"], log=logging.getLogger("backupctl"), stdout=sys.stderr) as backupctl:
        code = backupctl.wait()
    if code != 0:
        raise BenchError(f"backupctl full failed with exit code {code}")
    return {}


def op_incremental(spec: dict) -> dict:
    """An incremental on the newest backup, found in the catalog as the DAG's capture task finds it, then published."""
    client = _client(spec["remote"])
    parent = Catalog.load(client, LAYOUT).backups[-1]
    captured = _capture(spec).incremental(parent)
    if captured.kind != "incremental":
        raise BenchError(f"the incremental became a full backup: {captured.details.get('promoted_from_incremental')}")
    manifest = _publish(captured, client)
    return {
        "backup_id": manifest.id, "bytes": manifest.artifact.bytes, "uncompressed_bytes": manifest.uncompressed_bytes,
        "parent_xmin": parent.details["snapshot"]["xmin"],
        "tables": manifest.details.get("captured"),
    }


def op_restore(spec: dict) -> dict:
    client = _client(spec["remote"])
    chain = choose_chain(Catalog.load(client, LAYOUT), backup_id=spec["backup_id"])
    report = ChainRestore(client, LAYOUT).run(chain, PgTarget(**spec["pg"]), jobs=spec["jobs"], work_dir=spec["work_dir"])
    return {"chain": report.chain, "steps": report.steps}


def op_bare_restore(spec: dict) -> dict:
    """``pg_restore -j N`` of a local ``pg_dump -Fc`` file, with the flags ChainRestore gives it."""
    target = PgTarget(**spec["pg"])
    argv = [spec["pg_restore"], "--no-password", "--exit-on-error", f"--jobs={spec['jobs']}", f"--dbname={target.dbname}", spec["file"]]
    with target.libpq_env() as env, ChildProcess(argv, env=env, log=logging.getLogger("pg_restore"), stdout=sys.stderr) as restore:
        code = restore.wait()
    if code != 0:
        raise BenchError(f"pg_restore failed with exit code {code}")
    return {}


OPERATIONS: dict[str, Callable[[dict], dict]] = {
    "baseline_dump": op_baseline_dump,
    "library_full": op_library_full,
    "dag_full": op_dag_full,
    "incremental": op_incremental,
    "restore": op_restore,
    "bare_restore": op_bare_restore,
}


# -- the driving side -----------------------------------------------------------------------


class Bench:
    """Seeds the scratch databases, runs the rounds, and drops everything it created in ``cleanup``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = PgTarget.from_url(urlsplit(args.pg_url)._replace(path="/postgres").geturl())
        self.prefix = f"pgbackup_bench_{uuid.uuid4().hex[:8]}"
        self.seeded = {scale: self.server.with_database(f"{self.prefix}_scale{scale}") for scale in args.scales}
        self.largest = args.scales[-1]
        self.jobs = os.cpu_count() or 1
        version_num, self.server_version = self.server.server_version()
        self.tools = tools_for_server(version_num)
        self.started = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="pgbackup-bench-"))  # last: cleanup() removes it
        self.airflow_home = self.tmp / "airflow"

    # -- lifecycle
    def run(self) -> dict:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        LOG.write_text(f"bench/run.py started {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
        for scale, target in self.seeded.items():
            self.progress(f"seeding {target.dbname} at scale {scale}")
            self.create(target)
            seed(target, scale)
        facts = self.facts()
        print_facts(facts, self.args)
        if not self.args.skip_airflow:
            self.progress("creating Airflow's metadata database")
            subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=self.airflow_env({}),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rounds = [{str(scale): self.scale_round(number, scale) for scale in self.args.scales} for number in range(self.args.rounds)]
        # Not --pg-url: it may hold a password.
        settings = {key: getattr(self.args, key) for key in ("scales", "rounds", "skip_airflow", "skip_scheduler", "quarter_hours",
                                                               "airflow_env")} | {
            "restore_jobs": self.jobs, "duration_s": time.monotonic() - self.started}
        return summarise(facts, settings, rounds)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        keep = {target.dbname for target in self.seeded.values()} if self.args.keep_db else set()
        for name in self.databases():
            if name not in keep:
                self.admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if keep:
            print(f"kept databases {', '.join(sorted(keep))}", file=sys.stderr)

    def progress(self, what: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f}s] {what}", file=sys.stderr, flush=True)

    # -- databases
    def admin(self, statement: sql.Composable) -> list[tuple]:
        conn = self.server.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def databases(self) -> list[str]:
        """Every database this run created: they all carry its random prefix."""
        rows = self.admin(sql.SQL("SELECT datname FROM pg_database"))
        return [name for (name,) in rows if name.startswith(self.prefix + "_")]

    def create(self, target: PgTarget, template: PgTarget | None = None) -> PgTarget:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template.dbname))
        self.admin(statement)
        return target

    def drop(self, target: PgTarget) -> None:
        self.admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.dbname)))

    def size(self, target: PgTarget) -> int:
        return self.admin(sql.SQL("SELECT pg_database_size({})").format(sql.Literal(target.dbname)))[0][0]

    def data_size(self, target: PgTarget) -> int:
        """The user's tables, their indexes and TOAST: what grows with the shop. ``pg_database_size`` also
        counts the ~7.5 MB system catalogs every database has, which would bend a fit at small scales."""
        conn = target.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c"
                            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                            " WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')")
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    # -- measuring
    def measure(self, operation: str, database: str, **spec) -> dict:
        """Run one variant in a process of its own (``--run-one``) and return what it measured,
        with the CPU of the backends serving ``database`` meanwhile (``server_cpu_s``)."""
        result = self.tmp / "result.json"
        result.unlink(missing_ok=True)
        spec.update(operation=operation, result=str(result))
        server_cpu = ServerCpu(self.server, [database]).start()
        with open(LOG, "a") as log:
            print(f"\n===== {operation} {datetime.now(timezone.utc).isoformat(timespec='seconds')}", file=log, flush=True)
            # The spec travels on stdin: it may hold the database password, which argv would show to `ps`.
            # Its own session keeps Ctrl-C to this process, which then stops it once, with SIGTERM.
            with subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--run-one"], stdin=subprocess.PIPE,
                                  stdout=log, stderr=log, text=True, start_new_session=True) as child:
                try:
                    child.communicate(json.dumps(spec))
                except BaseException:
                    child.terminate()  # it unwinds and stops the tools it started, each in a session of its own
                    child.wait()
                    raise
                finally:
                    server = server_cpu.stop()
        if child.returncode != 0:
            tail = "\n  ".join(LOG.read_text(errors="replace").splitlines()[-12:])
            raise BenchError(f"{operation} failed with exit code {child.returncode}; the end of {LOG}:\n  {tail}")
        return json.loads(result.read_text()) | with_server_cpu(server)

    def source_spec(self, target: PgTarget, out: Path) -> dict:
        """What the library's capture needs: the source, its client tools, and where the local copy and remote are."""
        return {"pg": asdict(target), "tools": {"bin_dir": str(self.tools.bin_dir), "major": self.tools.major, "version": self.tools.version},
                "server_version": self.server_version, "local_dir": str(out / "local"), "remote": str(out / "remote")}

    def airflow_env(self, backup_env: dict[str, str]) -> dict[str, str]:
        """This project's Airflow on a throwaway home, the run's connections and settings, and nothing inherited."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
        env.update(
            AIRFLOW_HOME=str(self.airflow_home),
            AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            BACKUP_TASK_RETRIES="0",
            **self.args.airflow_env,
            **backup_env,
        )
        return env

    def backup_env(self, source: PgTarget, out: Path) -> dict[str, str]:
        """Airflow's environment for a full backup of ``source`` into a local remote under ``out``."""
        return self.airflow_env({
            "AIRFLOW_CONN_BACKUP_SOURCE": urlsplit(self.args.pg_url)._replace(path=f"/{source.dbname}").geturl(),
            "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(out / "remote")}}),
            "BACKUP_LOCAL_DIR": str(out / "local"),
        })

    # -- rounds
    def scale_round(self, number: int, scale: int) -> dict:
        """Full backups, restores, the incremental chain and its restore, on a fresh copy of the database seeded at ``scale``."""
        work = self.create(self.server.with_database(f"{self.prefix}_work"), template=self.seeded[scale])
        out = self.tmp / "round"
        step = f"round {number + 1}/{self.args.rounds}, scale {scale}:"
        airflow = scale == self.largest and not self.args.skip_airflow
        try:
            fulls = {}
            variants = [("baseline", self.full_baseline), ("library", self.full_library)]
            if airflow:
                variants.append(("airflow", self.full_dag))
            shift = number % len(variants)  # each variant goes first once: the first one reads a colder cache
            for name, measure in variants[shift:] + variants[:shift]:
                self.progress(f"{step} full backup, {name}")
                fulls[name] = measure(work, out / name)
            if airflow and not self.args.skip_scheduler:
                self.progress(f"{step} full backup, two DAG runs on a running scheduler (starting it, untimed)")
                fulls["scheduler_first"], fulls["scheduler"] = self.full_on_scheduler(work, out / "scheduler")
            self.progress(f"{step} restores of the full")
            restores = {
                "bare": self.restore_bare(out / "baseline" / "remote" / "baseline.dump"),
                "full": self.restore(out / "library", fulls["library"]["backup_id"]),
            }
            incrementals = []
            for seed_number, fraction in enumerate(FRACTIONS, start=1):
                self.progress(f"{step} {fraction:.1%} of the rows change, incremental")
                incrementals.append(self.incremental(work, out / "library", fraction, seed_number))
            self.progress(f"{step} restore of the full + {len(FRACTIONS)} incrementals")
            restores["chain"] = self.restore(out / "library", incrementals[-1]["backup_id"])
            for inc, apply_s in zip(incrementals, restores["chain"]["apply_s"]):
                inc["apply_s"] = apply_s
            quarter_hours = []
            for number_in_day in range(self.args.quarter_hours):
                self.progress(f"{step} quarter hour {number_in_day + 1}/{self.args.quarter_hours}: 0.1% of the rows change, incremental")
                quarter_hours.append(self.incremental(work, out / "library", FRACTIONS[TENTH_PERCENT], len(FRACTIONS) + 1 + number_in_day))
            seeded = self.seeded[scale]
            return {"database_bytes": self.size(seeded), "data_bytes": self.data_size(seeded),
                    "full": fulls, "restore": restores, "incremental": incrementals, "quarter_hours": quarter_hours}
        finally:
            self.drop(work)
            shutil.rmtree(out, ignore_errors=True)

    def full_baseline(self, source: PgTarget, out: Path) -> dict:
        stored = out / "remote" / "baseline.dump"
        stored.parent.mkdir(parents=True)
        result = self.measure("baseline_dump", source.dbname, pg=asdict(source), pg_dump=self.tools.pg_dump, object=str(stored))
        return result | {"bytes": stored.stat().st_size}

    def full_library(self, source: PgTarget, out: Path) -> dict:
        return self.measure("library_full", source.dbname, **self.source_spec(source, out))

    def full_dag(self, source: PgTarget, out: Path) -> dict:
        result = self.measure("dag_full", source.dbname, env=self.backup_env(source, out))
        stored = Catalog.load(_client(str(out / "remote")), LAYOUT).backups[-1]
        tasks = dag_task_seconds(self.airflow_home / "airflow.db")
        shutil.rmtree(out)  # a second full backup's worth of disk, not needed again
        return result | {"bytes": stored.artifact.bytes, "tasks_s": tasks}

    def full_on_scheduler(self, source: PgTarget, out: Path) -> tuple[dict, dict]:
        """pg_full_backup triggered twice through the REST API on a running api-server + scheduler + dag-processor:
        the first run after the start-up, and the second, the steady state of a scheduler that has been up.

        Each is timed from the trigger to the run's success; CPU = every component's process tree
        (the task processes, pg_dump, rclone) during the run, so it includes the library's own.
        """
        from airflow_scheduler import (
            RunningAirflow,  # Airflow's test harness: only when this path is measured
        )

        runs = []
        with RunningAirflow(self.backup_env(source, out), self.tmp / "airflow-components", AIRFLOW_LOGS) as running:
            for _ in range(2):
                cpu = running.cpu_s()
                server_cpu = ServerCpu(self.server, [source.dbname]).start()
                try:
                    result = running.run(DAG_ID)
                finally:
                    server = server_cpu.stop()
                result["cpu_s"] = running.cpu_s() - cpu
                stored = Catalog.load(_client(str(out / "remote")), LAYOUT).backups[-1]
                runs.append(result | with_server_cpu(server) | {"bytes": stored.artifact.bytes})
        shutil.rmtree(out)
        return runs[0], runs[1]

    def incremental(self, work: PgTarget, out: Path, fraction: float, seed_number: int) -> dict:
        """Change ``fraction`` of the rows (the same change set every round), then take and measure an incremental."""
        conn = work.connect()
        try:
            changed = mutate_sample_shop(conn, fraction, seed=seed_number)
        finally:
            conn.close()
        result = self.measure("incremental", work.dbname, **self.source_spec(work, out))
        raw = raw_changed_bytes(work, result.pop("parent_xmin"))
        return result | {"fraction": fraction, "rows_changed": sum(changed.values()), "raw_changed_bytes": raw}

    def restore(self, out: Path, backup_id: str) -> dict:
        """ChainRestore of ``backup_id`` (and the backups it stands on) into an empty database, with nproc jobs."""
        target = self.create(self.server.with_database(f"{self.prefix}_restored"))
        try:
            result = self.measure("restore", target.dbname, pg=asdict(target), remote=str(out / "remote"), backup_id=backup_id,
                                  jobs=self.jobs, work_dir=str(self.tmp))
        finally:
            self.drop(target)
        steps = result.pop("steps")
        applied = [steps[f"apply {backup}"] for backup in result["chain"][1:]]
        return result | {
            "download_s": steps["download and verify"], "pg_restore_s": steps[f"pg_restore {result['chain'][0]}"],
            "apply_total_s": sum(applied), "check_s": steps["check fingerprints"], "apply_s": applied,
        }

    def restore_bare(self, dump: Path) -> dict:
        target = self.create(self.server.with_database(f"{self.prefix}_restored"))
        try:
            return self.measure("bare_restore", target.dbname, pg=asdict(target), pg_restore=self.tools.pg_restore, file=str(dump),
                                jobs=self.jobs)
        finally:
            self.drop(target)

    def facts(self) -> dict:
        rclone = subprocess.run([find_rclone(), "version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        facts = {
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "nproc": os.cpu_count(),
            "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
            "load_average": os.getloadavg(),
            "postgresql": self.server_version,
            "pg_dump": self.tools.version,
            "rclone": rclone.removeprefix("rclone "),
            "python": platform.python_version(),
            "database_bytes": {str(scale): self.size(target) for scale, target in self.seeded.items()},
            "data_bytes": {str(scale): self.data_size(target) for scale, target in self.seeded.items()},
        }
        if not self.args.skip_airflow:
            facts["airflow"] = metadata.version("apache-airflow")
        return facts


def with_server_cpu(server: dict | None) -> dict:
    """The server-side CPU fields of a measurement; ``None`` when the server is not on this machine."""
    if server is None:
        return {"server_cpu_s": None, "backends": None}
    return {"server_cpu_s": server["cpu_s"], "backends": server["backends"]}


def seed(target: PgTarget, scale: int) -> None:
    """Fill the database from a child process, so the seeder's memory stays out of this one."""
    child = multiprocessing.Process(target=_seed_in_child, args=(target, scale))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise BenchError(f"seeding the sample shop at scale {scale} failed (exit code {child.exitcode})")


def _seed_in_child(target: PgTarget, scale: int) -> None:
    conn = target.connect()
    try:
        seed_sample_shop(conn, scale=scale)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM")  # hint bits and visibility map set, as in a database that has lived a while
    finally:
        conn.close()


def raw_changed_bytes(work: PgTarget, parent_xmin: int) -> int | None:
    """``sum(pg_column_size(row))`` of the rows the incremental captured as changed.

    Uses the capture's own test for "written since the parent's snapshot"; nothing
    writes between the incremental and this query, so it counts exactly those rows.
    """
    conn = work.connect()
    try:
        with conn.cursor() as cur:
            condition = changed_rows_condition(parent_xmin)
            total = 0
            for table in list_tables(cur):
                cur.execute(sql.SQL("SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {} AS t WHERE {}").format(table.ident, condition))
                total += int(cur.fetchone()[0])
    finally:
        conn.close()
    return total


def dag_task_seconds(database: Path) -> dict[str, float]:
    """Each task's duration in the newest pg_full_backup run, from Airflow's metadata database."""
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute(
            "SELECT task_id, duration FROM task_instance WHERE dag_id = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)", (DAG_ID, DAG_ID),
        ).fetchall()
    finally:
        conn.close()
    return {task: duration or 0.0 for task, duration in rows}


# -- summary and report -------------------------------------------------------------------------


def medians(runs: list[dict]) -> dict:
    """The median over rounds of every number measured; lists element-wise; anything else from the last round."""
    def median_of(values: list):
        first = values[0]
        if isinstance(first, dict) and all(value.keys() == first.keys() for value in values):
            return medians(values)
        if isinstance(first, list) and all(len(value) == len(first) for value in values):
            return [median_of(list(column)) for column in zip(*values)]
        if isinstance(first, (int, float)) and not isinstance(first, bool) and all(isinstance(v, (int, float)) for v in values):
            return statistics.median(values)
        return values[-1]

    return {key: median_of([run[key] for run in runs]) for key in runs[0]}


def total_cpu(measured: dict) -> float:
    """Client CPU plus the server's for the same variant (the server's counted as 0 where not measured)."""
    return measured["cpu_s"] + (measured.get("server_cpu_s") or 0.0)


def summarise(facts: dict, settings: dict, rounds: list[dict]) -> dict:
    scales = {scale: medians([r[scale] for r in rounds]) for scale in rounds[0]}
    largest = scales[str(settings["scales"][-1])]
    for s in scales.values():
        s["cpu_per_day"] = cpu_per_day(s)
    summary = {"scales": scales, "growth": growth(scales), "change_growth": change_growth(scales)}
    full = largest["full"]
    overhead = {}
    if "airflow" in full:
        tasks = full["airflow"]["tasks_s"]
        overhead["dags_test"] = {
            "wall_s": full["airflow"]["wall_s"],
            "minus_library_s": full["airflow"]["wall_s"] - full["library"]["wall_s"],
            "dag_only_tasks_s": sum(tasks.get(task, 0.0) for task in DAG_ONLY_TASKS),
            "outside_tasks_s": full["airflow"]["wall_s"] - sum(tasks.values()),
        }
    for path in ("scheduler_first", "scheduler"):
        if path in full:
            tasks = full[path]["tasks_s"]
            overhead[path] = {
                "wall_s": full[path]["wall_s"],
                "minus_library_s": full[path]["wall_s"] - full["library"]["wall_s"],
                "dag_only_tasks_s": sum(tasks.get(task, 0.0) for task in DAG_ONLY_TASKS),
                "outside_tasks_s": full[path]["wall_s"] - sum(tasks.values()),
                "cpu_minus_library_s": full[path]["cpu_s"] - full["library"]["cpu_s"],
            }
    summary["airflow_overhead"] = overhead
    return {"facts": facts, "settings": settings, "summary": summary, "targets": targets(scales, str(settings["scales"][-1]), overhead),
            "rounds": rounds}


def cpu_per_day(s: dict) -> dict:
    """What a day of 15-minute incrementals (each after 0.1 % changed) costs in CPU, against one full a day.

    One incremental's cost is the median over every incremental taken after a 0.1 % change (the
    chain's first and the ``--quarter-hours`` after it); the first and the last are kept beside it,
    so a cost that grows along the chain shows.
    """
    full = s["full"]["library"]
    sample = [s["incremental"][TENTH_PERCENT], *s["quarter_hours"]]
    per_run = statistics.median(total_cpu(inc) for inc in sample)
    server = [inc["server_cpu_s"] for inc in sample if inc.get("server_cpu_s") is not None]
    return {
        "full_cpu_s": total_cpu(full), "full_server_cpu_s": full.get("server_cpu_s"),
        "incremental_cpu_s": per_run, "incremental_server_cpu_s": statistics.median(server) if server else None,
        "incremental_wall_s": statistics.median(inc["wall_s"] for inc in sample),
        "sampled": len(sample), "first_cpu_s": total_cpu(sample[0]), "last_cpu_s": total_cpu(sample[-1]),
        "incrementals_per_day_cpu_s": INCREMENTALS_PER_DAY * per_run,
        "vs_one_full": INCREMENTALS_PER_DAY * per_run / total_cpu(full),
    }


# Every figure fitted over the scales: name, unit, how to read it from one scale's summary.
FIGURES: tuple[tuple[str, str, Callable[[dict], float]], ...] = (
    ("full, bare pg_dump -Fc | rclone rcat", "s", lambda s: s["full"]["baseline"]["wall_s"]),
    ("full, library path", "s", lambda s: s["full"]["library"]["wall_s"]),
    ("full, library path: CPU (client + server)", "CPU s", lambda s: total_cpu(s["full"]["library"])),
    ("full, stored", "MB", lambda s: s["full"]["library"]["bytes"] / MB),
    ("full, bare stored", "MB", lambda s: s["full"]["baseline"]["bytes"] / MB),
    ("incremental after 0.1 %", "s", lambda s: s["incremental"][TENTH_PERCENT]["wall_s"]),
    ("incremental after 1 %", "s", lambda s: s["incremental"][ONE_PERCENT]["wall_s"]),
    ("incremental after 0.1 %: stored", "MB", lambda s: s["incremental"][TENTH_PERCENT]["bytes"] / MB),
    ("15-min incrementals a day: CPU", "CPU s", lambda s: s["cpu_per_day"]["incrementals_per_day_cpu_s"]),
    ("bare pg_restore -j N", "s", lambda s: s["restore"]["bare"]["wall_s"]),
    ("restore of the full, with its check", "s", lambda s: s["restore"]["full"]["wall_s"]),
    ("restore of the full + 4 incrementals", "s", lambda s: s["restore"]["chain"]["wall_s"]),
    ("peak memory, library full", "MB", lambda s: s["full"]["library"]["peak_rss_mb"]),
    ("peak memory, restore of the full", "MB", lambda s: s["restore"]["full"]["peak_rss_mb"]),
)
# Ratios at 100 GB from two projected figures: name, numerator, denominator (FIGURES names), target.
PROJECTED_RATIOS = (
    ("incremental after 1 % / full", "incremental after 1 %", "full, library path", 0.10),
    ("incremental after 0.1 % / full", "incremental after 0.1 %", "full, library path", 0.05),
    ("full, library / bare", "full, library path", "full, bare pg_dump -Fc | rclone rcat", 1.2),
    ("full stored / bare stored", "full, stored", "full, bare stored", 1.0),
    ("restore with check / bare pg_restore", "restore of the full, with its check", "bare pg_restore -j N", 1.3),
)


def growth(scales: dict) -> dict:
    """Each figure's power law over the data size (tables, indexes, TOAST) and its value at 100 GB of it."""
    sizes = [s["data_bytes"] for s in scales.values()]
    figures = {}
    for name, unit, read in FIGURES:
        values = [read(s) for s in scales.values()]
        fit, linear = fit_power_law(sizes, values), fit_fixed_plus_linear(sizes, values)
        figures[name] = {"unit": unit, "values": values, "exponent": fit and fit.b, "projected": fit and fit.at(PROJECTED_BYTES),
                         "fixed": linear and linear.fixed, "per_gb": linear and linear.rate * 1e9,
                         "projected_linear": linear and linear.at(PROJECTED_BYTES)}
    ratios = {}
    for name, top, bottom, limit in PROJECTED_RATIOS:
        ratios[name] = {"limit": limit, **{
            model: figures[top][model] / figures[bottom][model] if figures[top][model] and figures[bottom][model] else None
            for model in ("projected", "projected_linear")}}
    return {"sizes": sizes, "projected_bytes": PROJECTED_BYTES, "figures": figures, "ratios": ratios}


def change_growth(scales: dict) -> dict:
    """At each scale, the incremental's growth with the change: ``y = a * fraction ** c`` over 0.1, 1 and 10 %."""
    result = {}
    for scale, s in scales.items():
        incs = s["incremental"][:3]
        fractions = [inc["fraction"] for inc in incs]
        fits = {what: fit_power_law(fractions, [read(inc) for inc in incs]) for what, read in (
            ("wall_s", lambda inc: inc["wall_s"]), ("cpu_s", total_cpu), ("bytes", lambda inc: inc["bytes"]))}
        result[scale] = {what: fit and fit.b for what, fit in fits.items()}
    return result


def targets(scales: dict, largest: str, overhead: dict) -> list[dict]:
    """Each target of issue #12 with the figure, what it is compared with, and the ratio; lower is better for all."""
    s = scales[largest]
    full, base = s["full"]["library"], s["full"]["baseline"]
    rows = [
        ("incremental after 1 %: wall", s["incremental"][ONE_PERCENT]["wall_s"], "s", "the full's", full["wall_s"], 0.10, "≤ 10 %"),
        ("incremental after 0.1 %: wall", s["incremental"][TENTH_PERCENT]["wall_s"], "s", "the full's", full["wall_s"], 0.05, "≤ 5 %"),
        ("full, library path: wall", full["wall_s"], "s", "pg_dump -Fc | rclone rcat", base["wall_s"], 1.2, "≤ 1.2×"),
        ("full, library path: stored", full["bytes"] / MB, "MB", "pg_dump -Fc", base["bytes"] / MB, 1.0, "≤ 1.0×"),
        ("restore of the full with its check", s["restore"]["full"]["wall_s"], "s", "pg_restore -j N", s["restore"]["bare"]["wall_s"], 1.3, "≤ 1.3×"),
    ]
    table = [{"target": name, "figure": figure, "unit": unit, "reference": reference, "reference_figure": ref,
              "ratio": figure / ref, "limit": limit, "limit_text": text, "met": figure / ref <= limit}
             for name, figure, unit, reference, ref, limit, text in rows]
    for path, label in (("scheduler", "running scheduler, 2nd run"), ("scheduler_first", "running scheduler, 1st run"),
                        ("dags_test", "airflow dags test")):
        if path in overhead:
            added = overhead[path]["minus_library_s"]
            table.append({"target": f"Airflow's share, {label}", "figure": overhead[path]["wall_s"], "unit": "s",
                          "reference": "the library path", "reference_figure": full["wall_s"], "ratio": None, "added_s": added,
                          "limit": 5.0, "limit_text": "≤ +5 s", "met": added <= 5.0})
    for scale, at in scales.items():
        peak = max(at["full"]["library"]["peak_rss_mb"], at["restore"]["full"]["peak_rss_mb"], at["restore"]["chain"]["peak_rss_mb"],
                   *(inc["peak_rss_mb"] for inc in at["incremental"]))
        table.append({"target": f"peak memory, scale {scale}", "figure": peak, "unit": "MB", "reference": "", "reference_figure": None,
                      "ratio": None, "limit": 200.0, "limit_text": "≤ 200 MB", "met": peak <= 200.0})
    smallest = scales[min(scales, key=int)]
    for what, read in (("library full", lambda at: at["full"]["library"]["peak_rss_mb"]),
                       ("restore of the full", lambda at: at["restore"]["full"]["peak_rss_mb"])):
        ratio = read(s) / read(smallest)
        table.append({"target": f"memory flat, {what}", "figure": read(s), "unit": "MB", "reference": f"scale {min(scales, key=int)}",
                      "reference_figure": read(smallest), "ratio": ratio, "limit": 1.1, "limit_text": "≤ 1.1×", "met": ratio <= 1.1})
    return table


def print_facts(facts: dict, args: argparse.Namespace) -> None:
    print(f"machine: {facts['nproc']} CPUs, {facts['memory_gb']:.1f} GB memory, "
          f"load average {' '.join(f'{x:.1f}' for x in facts['load_average'])} at the start")
    tools = f"PostgreSQL {facts['postgresql']}, pg_dump {facts['pg_dump']}, rclone {facts['rclone']}, Python {facts['python']}"
    print(tools + (f", Airflow {facts['airflow']}" if "airflow" in facts else ""))
    if args.airflow_env:
        print("Airflow settings of the DAG runs beyond the project's: " + ", ".join(f"{k}={v}" for k, v in args.airflow_env.items()))
    sizes = ", ".join(f"scale {scale} = {size / MB:.1f} MB ({facts['data_bytes'][scale] / MB:.1f} MB of tables and indexes)"
                      for scale, size in facts["database_bytes"].items())
    print(f"sample shop: {sizes} (pg_database_size)", flush=True)


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    print(f"\n{title}")
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())


def number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def ratio_text(target: dict) -> str:
    if target["ratio"] is None:
        return f"+{target['added_s']:.1f} s" if "added_s" in target else ""
    if target["limit_text"].endswith("%"):
        return f"{100 * target['ratio']:.1f} %"
    return f"{target['ratio']:.3f}×"


def print_report(report: dict) -> None:
    summary, settings = report["summary"], report["settings"]
    largest = str(settings["scales"][-1])
    s = summary["scales"][largest]
    full, base = s["full"], s["full"]["baseline"]
    print(f"\nmedians of {settings['rounds']} round(s); detail at scale {largest}; restores with {settings['restore_jobs']} jobs; "
          f"the whole run took {settings['duration_s'] / 60:.1f} min.\nCPU = the measured process and the tools it waited for; "
          "server CPU = the backends serving the measured database (bench/server_cpu.py).\npeak RSS = the largest single process, "
          f"never below the measuring process's own {s['restore']['bare']['own_rss_mb']:.0f} MB (Linux carries it into the tools it starts)")
    names = {"baseline": "pg_dump -Fc | rclone rcat (baseline)", "library": "library: capture, upload, verify, manifest",
             "airflow": "bin/backupctl full (airflow dags test)", "scheduler_first": "running scheduler, REST trigger, 1st run",
             "scheduler": "running scheduler, REST trigger, 2nd run"}
    print_table("Full backup", ["", "wall s", "CPU s", "server CPU s", "peak RSS MB", "stored MB", "× wall", "× CPU+server", "× bytes"], [
        [names[name], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", number(r.get("server_cpu_s")), f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "–",
         f"{r['bytes'] / MB:.1f}", f"{r['wall_s'] / base['wall_s']:.2f}", f"{total_cpu(r) / total_cpu(base):.2f}", f"{r['bytes'] / base['bytes']:.3f}"]
        for name, r in full.items()
    ])
    for path, label in (("dags_test", "airflow dags test"), ("scheduler_first", "running scheduler, 1st run"),
                        ("scheduler", "running scheduler, 2nd run")):
        if path in summary["airflow_overhead"]:
            o = summary["airflow_overhead"][path]
            print(f"Airflow's share, {label}: DAG run − library path = {o['minus_library_s']:.1f} s ({100 * o['minus_library_s'] / o['wall_s']:.0f} % "
                  f"of the run); {o['outside_tasks_s']:.1f} s outside any task, {o['dag_only_tasks_s']:.1f} s in tasks the library path does not run")
    if "scheduler" in summary["airflow_overhead"]:
        o = summary["airflow_overhead"]["scheduler"]
        print("  running scheduler: CPU = api-server, scheduler, dag-processor and their task processes during the run (peak RSS not "
              f"measured);\n  Airflow's CPU per run beyond the library's: {o['cpu_minus_library_s']:.1f} s — "
              f"× {INCREMENTALS_PER_DAY} = {INCREMENTALS_PER_DAY * o['cpu_minus_library_s']:.0f} CPU s a day if each incremental DAG run costs as much")
    lib = full["library"]
    print_table(f"Incremental, chained on the full (full: {lib['bytes'] / MB:.1f} MB, {lib['wall_s']:.1f} s)",
                ["changed", "rows", "stored MB", "% of full", "raw rows MB", "wall s", "% of full", "CPU s", "server CPU s",
                 "apply s", "peak RSS MB"], [
        [f"{r['fraction']:.1%}", f"{r['rows_changed']:,.0f}", f"{r['bytes'] / MB:.2f}", f"{100 * r['bytes'] / lib['bytes']:.2f}",
         number(r["raw_changed_bytes"] / MB if r["raw_changed_bytes"] is not None else None, 2),
         f"{r['wall_s']:.1f}", f"{100 * r['wall_s'] / lib['wall_s']:.1f}",
         f"{r['cpu_s']:.1f}", number(r.get("server_cpu_s")), f"{r['apply_s']:.1f}", f"{r['peak_rss_mb']:.0f}"]
        for r in s["incremental"]
    ])
    print("raw rows = sum(pg_column_size(row)) of the rows captured as changed; apply s = its share of the chain restore")
    bare = s["restore"]["bare"]
    names = {"bare": f"bare pg_restore -j {settings['restore_jobs']} (pg_dump -Fc file)", "full": "full (ChainRestore)",
             "chain": f"full + {len(FRACTIONS)} incrementals"}
    print_table("Restore into an empty database", ["", "wall s", "× bare", "download s", "pg_restore s", "apply s", "check s",
                                                   "CPU s", "server CPU s", "peak RSS MB"], [
        [names[name], f"{r['wall_s']:.1f}", f"{r['wall_s'] / bare['wall_s']:.2f}"]
        + ([f"{r['download_s']:.1f}", f"{r['pg_restore_s']:.1f}", f"{r['apply_total_s']:.1f}", f"{r['check_s']:.1f}"] if name != "bare" else ["", "", "", ""])
        + [f"{r['cpu_s']:.1f}", number(r.get("server_cpu_s")), f"{r['peak_rss_mb']:.0f}"]
        for name, r in s["restore"].items()
    ])
    print_table(f"CPU per day: {INCREMENTALS_PER_DAY} incrementals (every 15 min, 0.1 % changed each) against one full a day",
                ["scale", "full CPU s", "of it server", "incremental CPU s", "of it server", "first → last", "wall s",
                 "96 a day: CPU s", "× one full", "% of a core"], [
        [scale, f"{d['full_cpu_s']:.1f}", number(d["full_server_cpu_s"]), f"{d['incremental_cpu_s']:.2f}", number(d["incremental_server_cpu_s"], 2),
         f"{d['first_cpu_s']:.2f} → {d['last_cpu_s']:.2f}", f"{d['incremental_wall_s']:.1f}",
         f"{d['incrementals_per_day_cpu_s']:.0f}", f"{d['vs_one_full']:.1f}", f"{100 * d['incrementals_per_day_cpu_s'] / 86400:.2f}"]
        for scale, d in ((scale, at["cpu_per_day"]) for scale, at in summary["scales"].items())
    ])
    print(f"incremental = the median of {s['cpu_per_day']['sampled']} incrementals after a 0.1 % change each, the chain's first and "
          f"--quarter-hours {settings['quarter_hours']} after it (first → last: drift along the chain); CPU = user + sys of\n"
          "the capture process and its children (pg_dump, rclone) plus the backends serving the database, from /proc (bench/server_cpu.py);\n"
          "not counted: autovacuum, checkpointer, WAL writer, and Airflow's own CPU (the running scheduler's is printed under the full backup)")
    g = summary["growth"]
    print_table(f"Growth with the database (y = a · size^b, least squares on log-log over {len(g['sizes'])} sizes of tables + indexes) "
                "and at 100 GB",
                ["figure", "unit", *(f"{size / MB:.0f} MB" for size in g["sizes"]), "b", "at 100 GB", "fixed", "per GB",
                 "at 100 GB, fixed + linear"], [
        [name, f["unit"], *(f"{v:.2f}" for v in f["values"]), number(f["exponent"], 2), number(f["projected"]),
         number(f["fixed"], 2), number(f["per_gb"], 2), number(f["projected_linear"])]
        for name, f in g["figures"].items()
    ])
    print("b = 1: linear in the size, 0: flat. A fixed cost (start-up, connections) dominates small sizes and lowers b there,\n"
          "so the second reading fits y = fixed + per GB · size to the same points. Where the two projections differ, the fixed\n"
          "part decides: measure larger with --scales. Projections from sizes far below 100 GB are a direction, not a forecast.")
    def verdict(value: float | None, limit: float) -> str:
        return "–" if value is None else ("met" if value <= limit else "MISSED")

    print_table("Projected ratios at 100 GB (from the fits above)", ["", "power law", "", "fixed + linear", "", "target"], [
        [name, number(r["projected"], 2), verdict(r["projected"], r["limit"]), number(r["projected_linear"], 2),
         verdict(r["projected_linear"], r["limit"]), f"≤ {r['limit']:.2f}"]
        for name, r in g["ratios"].items()
    ])
    print_table("Growth with the change (y = a · fraction^c over 0.1, 1, 10 %)", ["scale", "c wall", "c CPU", "c stored bytes"], [
        [scale, number(c["wall_s"], 2), number(c["cpu_s"], 2), number(c["bytes"], 2)] for scale, c in summary["change_growth"].items()
    ])
    print("c = 1: proportional to the change; c = 0: the same cost whatever changed")
    print_table(f"Targets (issue #12), scale {largest}; ratios measured in this run", ["", "figure", "against", "ratio", "target", ""], [
        [t["target"], f"{t['figure']:.2f} {t['unit']}", f"{t['reference']} {number(t['reference_figure'], 2)}".strip() if t["reference"] else "",
         ratio_text(t), t["limit_text"],
         "met" if t["met"] else "MISSED"]
        for t in report["targets"]
    ])


if __name__ == "__main__":
    main()
