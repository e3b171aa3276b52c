"""The project's benchmark: full, incremental and restore against bare pg_dump / pg_restore, with the targets.

The issue "Performance and scale" sets targets that only a measurement can settle:

- a full backup takes no longer than ``pg_dump -Fc | rclone rcat`` and stores no more bytes;
- an incremental after 1 % of the rows changed stores ≤ 5 % of the full's bytes in ≤ 20 % of its time;
- restoring the full takes ≤ 1.1× a bare ``pg_restore -j N`` of a ``pg_dump -Fc`` file;
- peak memory stays ≤ 200 MB and does not grow with the database.

This script measures all of them in one run on one machine and prints them side by side,
each marked met or missed, so a change to the library is judged by numbers. It is a
benchmark, not a test: it asserts nothing and exits 0 whatever it measured.

What one run does. The sample shop (``pgbackup.sample_shop``) is seeded at ``--scale``
(300 ≈ 1 GB on disk) and at ``--small-scale`` into scratch databases, from child processes.
Every round then works on a fresh copy of the seeded database (``CREATE DATABASE ...
TEMPLATE``), so rounds start alike however much the last one changed:

1. full backups, in an order rotated every round: the bare baseline; the library path
   (``BackupCapture.full`` → rclone upload → verify → manifest, what the DAG's tasks do);
   ``bin/backupctl full``, the whole ``pg_full_backup`` DAG run through ``airflow dags test``;
2. restores into empty databases: bare ``pg_restore -j N`` of the baseline's file, and the
   library's full through ``ChainRestore`` (download, sha256, pg_restore, fingerprint check);
3. four incrementals, each after ``mutate_sample_shop`` changed 0.1 %, 1 %, 10 % and 1 % of
   the rows, then a restore of the full + those 4 incrementals;
4. at the small scale, the library full and its restore again, to show memory is flat.

How it measures. Every variant runs in its own process (this script with ``--run-one``)
that reports its wall time, its CPU (its own plus that of every child it waited for:
pg_dump, rclone, pg_restore, Airflow) and its peak RSS — that of the largest single process:
itself (``VmHWM``) or a child (``getrusage``, the counter ``/usr/bin/time -f %M`` reads).
So no variant's memory hides behind another's, nor behind this script's. Linux starts a
child's getrusage peak at the size of the process that started it, so a tool smaller than
the measuring process (bare pg_restore) shows that process's size, ~40 MB. PostgreSQL's
own CPU (the server side of COPY, fingerprints and key sorting) is not counted. Medians of
``--rounds`` rounds are reported; ratios are ratios of medians. The machine facts printed
first include the load average: on a shared machine wall times move with it.

Run from the repository root (``make bench`` runs the first line)::

    .venv/bin/python bench/run.py                                        # scale 300 and 30, 3 rounds: about an hour on 2 cores
    .venv/bin/python bench/run.py --scale 100 --small-scale 20           # 20 minutes on 2 cores
    .venv/bin/python bench/run.py --scale 5 --small-scale 2 --rounds 1   # a check that it all works, under 2 minutes

The table goes to stdout, the same numbers (and every round's) to ``bench/results/run.json``,
and the output of every measured process (the library's and Airflow's logs) to
``bench/results/run.log``. The scratch databases (``pgbackup_bench_<random>_*``) are
dropped at the end, also after an error, Ctrl-C or SIGTERM; ``--keep-db`` keeps the two
seeded ones. Backups, dumps and Airflow's home live in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
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

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "plugins"))

from child_process import ChildProcess  # noqa: E402
from pgbackup.capture import BackupCapture, CapturedBackup  # noqa: E402
from pgbackup.catalog import Catalog  # noqa: E402
from pgbackup.compression import Compression  # noqa: E402
from pgbackup.layout import BackupLayout  # noqa: E402
from pgbackup.manifest import BackupManifest  # noqa: E402
from pgbackup.postgres import PgTarget, PgTools, tools_for_server  # noqa: E402
from pgbackup.restore import ChainRestore, choose_chain  # noqa: E402
from pgbackup.sample_shop import mutate_sample_shop, seed_sample_shop  # noqa: E402
from pgbackup.tables import list_tables  # noqa: E402
from psycopg2 import sql  # noqa: E402
from rclone_provider.client import Rclone, RemoteConfig, find_rclone  # noqa: E402

RESULTS = PROJECT / "bench" / "results" / "run.json"
LOG = RESULTS.with_name("run.log")
LAYOUT = BackupLayout("database")
# The changes before each incremental, as fractions of the rows; the restore of the
# full + 4 incrementals replays this whole chain.  The 1 % one (index 1) meets its targets or not.
FRACTIONS = (0.001, 0.01, 0.1, 0.01)
ONE_PERCENT = 1
DAG_ID = "pg_full_backup"
# Tasks of the DAG that the library path does not run, so Airflow's share is not all Airflow's.
DAG_ONLY_TASKS = ("backup.check_archive", "backup.retention_remote", "backup.retention_local")
MB = 1e6


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and where its output is."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=300, help="sample shop scale measured; 300 is about 1 GB on disk (default: 300)")
    parser.add_argument("--small-scale", type=int, default=30, help="second, smaller scale, to show peak memory is flat (default: 30)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default: 3)")
    parser.add_argument("--keep-db", action="store_true", help="keep the two seeded scratch databases")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432", help="server to use; any database in the URL is ignored")
    parser.add_argument("--skip-airflow", action="store_true", help="do not run the DAG through Airflow (no Airflow overhead measured)")
    parser.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)  # internal: measure one variant, spec on stdin
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the scratch databases are dropped and children stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.run_one:
        run_one(json.load(sys.stdin))
        return
    if args.small_scale >= args.scale or args.rounds < 1:
        parser.error("--small-scale must be below --scale, and --rounds at least 1")
    bench = Bench(args)
    try:
        report = bench.run()
    finally:
        bench.cleanup()
    print_report(report)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(PROJECT)}; the measured processes' output is in {LOG.relative_to(PROJECT)}")


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
        "parent_xmin": parent.details["snapshot"]["xmin"], "xmax": manifest.details["snapshot"]["xmax"],
        "tables": manifest.details["captured"],
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
        self.main = self.server.with_database(f"{self.prefix}_main")
        self.small = self.server.with_database(f"{self.prefix}_small")
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
        for target, scale in ((self.main, self.args.scale), (self.small, self.args.small_scale)):
            self.progress(f"seeding {target.dbname} at scale {scale}")
            self.create(target)
            seed(target, scale)
        facts = self.facts()
        print_facts(facts, self.args)
        if not self.args.skip_airflow:
            self.progress("creating Airflow's metadata database")
            subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=self.airflow_env({}),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rounds, small_rounds = [], []
        for number in range(self.args.rounds):
            rounds.append(self.main_round(number))
            small_rounds.append(self.small_round(number))
        # Not --pg-url: it may hold a password.
        settings = {key: getattr(self.args, key) for key in ("scale", "small_scale", "rounds", "skip_airflow")} | {"restore_jobs": self.jobs}
        return summarise(facts, settings, rounds, small_rounds)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        keep = {self.main.dbname, self.small.dbname} if self.args.keep_db else set()
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

    # -- measuring
    def measure(self, operation: str, **spec) -> dict:
        """Run one variant in a process of its own (``--run-one``) and return what it measured."""
        result = self.tmp / "result.json"
        result.unlink(missing_ok=True)
        spec.update(operation=operation, result=str(result))
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
        if child.returncode != 0:
            tail = "\n  ".join(LOG.read_text(errors="replace").splitlines()[-12:])
            raise BenchError(f"{operation} failed with exit code {child.returncode}; the end of {LOG}:\n  {tail}")
        return json.loads(result.read_text())

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
            **backup_env,
        )
        return env

    # -- rounds
    def main_round(self, number: int) -> dict:
        """Full backups three ways, restores, the incremental chain and its restore, on a fresh copy of the seeded database."""
        work = self.create(self.server.with_database(f"{self.prefix}_work"), template=self.main)
        out = self.tmp / "round"
        try:
            fulls = {}
            variants = [("baseline", self.full_baseline), ("library", self.full_library)]
            if not self.args.skip_airflow:
                variants.append(("airflow", self.full_dag))
            shift = number % len(variants)  # each variant goes first once: the first one reads a colder cache
            for name, measure in variants[shift:] + variants[:shift]:
                self.progress(f"round {number + 1}/{self.args.rounds}: full backup, {name}")
                fulls[name] = measure(work, out / name)
            self.progress(f"round {number + 1}/{self.args.rounds}: restores of the full")
            restores = {
                "bare": self.restore_bare(out / "baseline" / "remote" / "baseline.dump"),
                "full": self.restore(out / "library", fulls["library"]["backup_id"]),
            }
            incrementals = []
            for seed_number, fraction in enumerate(FRACTIONS, start=1):
                self.progress(f"round {number + 1}/{self.args.rounds}: {fraction:.1%} of the rows change, incremental")
                incrementals.append(self.incremental(work, out / "library", fraction, seed_number))
            self.progress(f"round {number + 1}/{self.args.rounds}: restore of the full + {len(FRACTIONS)} incrementals")
            restores["chain"] = self.restore(out / "library", incrementals[-1]["backup_id"])
            for inc, apply_s in zip(incrementals, restores["chain"]["apply_s"]):
                inc["apply_s"] = apply_s
            return {"full": fulls, "restore": restores, "incremental": incrementals}
        finally:
            self.drop(work)
            shutil.rmtree(out, ignore_errors=True)

    def small_round(self, number: int) -> dict:
        """The library full and its restore at the small scale: the other point of the memory comparison."""
        self.progress(f"round {number + 1}/{self.args.rounds}: scale {self.args.small_scale}, library full and restore")
        out = self.tmp / "small"
        try:
            full = self.full_library(self.small, out)
            return {"full": full, "restore": self.restore(out, full["backup_id"])}
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def full_baseline(self, source: PgTarget, out: Path) -> dict:
        stored = out / "remote" / "baseline.dump"
        stored.parent.mkdir(parents=True)
        result = self.measure("baseline_dump", pg=asdict(source), pg_dump=self.tools.pg_dump, object=str(stored))
        return result | {"bytes": stored.stat().st_size}

    def full_library(self, source: PgTarget, out: Path) -> dict:
        return self.measure("library_full", **self.source_spec(source, out))

    def full_dag(self, source: PgTarget, out: Path) -> dict:
        env = self.airflow_env({
            "AIRFLOW_CONN_BACKUP_SOURCE": urlsplit(self.args.pg_url)._replace(path=f"/{source.dbname}").geturl(),
            "AIRFLOW_CONN_BACKUP_REMOTE": json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(out / "remote")}}),
            "BACKUP_LOCAL_DIR": str(out / "local"),
        })
        result = self.measure("dag_full", env=env)
        stored = Catalog.load(_client(str(out / "remote")), LAYOUT).backups[-1]
        tasks = dag_task_seconds(self.airflow_home / "airflow.db")
        shutil.rmtree(out)  # a second full backup's worth of disk, not needed again
        return result | {"bytes": stored.artifact.bytes, "tasks_s": tasks}

    def incremental(self, work: PgTarget, out: Path, fraction: float, seed_number: int) -> dict:
        """Change ``fraction`` of the rows (the same change set every round), then take and measure an incremental."""
        conn = work.connect()
        try:
            changed = mutate_sample_shop(conn, fraction, seed=seed_number)
        finally:
            conn.close()
        result = self.measure("incremental", **self.source_spec(work, out))
        raw = raw_changed_bytes(work, result.pop("parent_xmin"), result.pop("xmax"))
        return result | {"fraction": fraction, "rows_changed": sum(changed.values()), "raw_changed_bytes": raw}

    def restore(self, out: Path, backup_id: str) -> dict:
        """ChainRestore of ``backup_id`` (and the backups it stands on) into an empty database, with nproc jobs."""
        target = self.create(self.server.with_database(f"{self.prefix}_restored"))
        try:
            result = self.measure("restore", pg=asdict(target), remote=str(out / "remote"), backup_id=backup_id,
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
            return self.measure("bare_restore", pg=asdict(target), pg_restore=self.tools.pg_restore, file=str(dump), jobs=self.jobs)
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
            "database_bytes": self.size(self.main),
            "small_database_bytes": self.size(self.small),
        }
        if not self.args.skip_airflow:
            facts["airflow"] = metadata.version("apache-airflow")
        return facts


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


def raw_changed_bytes(work: PgTarget, parent_xmin: int, xmax: int) -> int:
    """``sum(pg_column_size(row))`` of the rows the incremental captured as changed.

    Uses the capture's own test for "written since the parent's snapshot"; nothing
    writes between the incremental and this query, so it counts exactly those rows.
    """
    condition = BackupCapture._changed_rows_condition(xmax, parent_xmin)
    conn = work.connect()
    try:
        with conn.cursor() as cur:
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
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            return statistics.median(values)
        return values[-1]

    return {key: median_of([run[key] for run in runs]) for key in runs[0]}


def summarise(facts: dict, settings: dict, rounds: list[dict], small_rounds: list[dict]) -> dict:
    full = {name: medians([r["full"][name] for r in rounds]) for name in rounds[0]["full"]}
    restore = {name: medians([r["restore"][name] for r in rounds]) for name in rounds[0]["restore"]}
    incremental = [medians([r["incremental"][i] for r in rounds]) for i in range(len(FRACTIONS))]
    small = {"full": medians([r["full"] for r in small_rounds]), "restore": medians([r["restore"] for r in small_rounds])}
    summary = {"full": full, "restore": restore, "incremental": incremental, "small_scale": small}
    if "airflow" in full:
        tasks = full["airflow"]["tasks_s"]
        summary["airflow_overhead"] = {
            "dag_minus_library_s": full["airflow"]["wall_s"] - full["library"]["wall_s"],
            "dag_only_tasks_s": sum(tasks.get(task, 0.0) for task in DAG_ONLY_TASKS),
            "outside_tasks_s": full["airflow"]["wall_s"] - sum(tasks.values()),
        }
    return {"facts": facts, "settings": settings, "summary": summary, "targets": targets(summary),
            "rounds": rounds, "small_scale_rounds": small_rounds}


def targets(s: dict) -> list[dict]:
    """Each target of the issue with the measured value; lower is better for all of them."""
    full, base, inc = s["full"]["library"], s["full"]["baseline"], s["incremental"][ONE_PERCENT]
    restore_peak = max(s["restore"]["full"]["peak_rss_mb"], s["restore"]["chain"]["peak_rss_mb"])
    rows = [
        ("full backup wall, library path", "≤ 1.00× baseline", full["wall_s"] / base["wall_s"], 1.0, "×"),
        ("full backup bytes stored", "≤ 1.00× baseline", full["bytes"] / base["bytes"], 1.0, "×"),
        ("incremental at 1 %: bytes", "≤ 5 % of the full's", 100 * inc["bytes"] / full["bytes"], 5.0, "%"),
        ("incremental at 1 %: wall", "≤ 20 % of the full's", 100 * inc["wall_s"] / full["wall_s"], 20.0, "%"),
        ("restore of the full", "≤ 1.10× bare pg_restore -j N", s["restore"]["full"]["wall_s"] / s["restore"]["bare"]["wall_s"], 1.1, "×"),
        ("peak memory, library full backup", "≤ 200 MB", full["peak_rss_mb"], 200.0, " MB"),
        ("peak memory, restores", "≤ 200 MB", restore_peak, 200.0, " MB"),
        ("memory flat, library full backup", "≤ 1.10× the small scale's", full["peak_rss_mb"] / s["small_scale"]["full"]["peak_rss_mb"], 1.1, "×"),
        ("memory flat, restore of the full", "≤ 1.10× the small scale's",
         s["restore"]["full"]["peak_rss_mb"] / s["small_scale"]["restore"]["peak_rss_mb"], 1.1, "×"),
    ]
    if "airflow" in s["full"]:
        rows.insert(1, ("full backup wall, Airflow DAG run", "≤ 1.00× baseline", s["full"]["airflow"]["wall_s"] / base["wall_s"], 1.0, "×"))
    return [{"target": name, "limit_text": limit_text, "measured": value, "limit": limit, "unit": unit, "met": value <= limit,
             "vs_limit_pct": 100 * (value / limit - 1)} for name, limit_text, value, limit, unit in rows]


def print_facts(facts: dict, args: argparse.Namespace) -> None:
    print(f"machine: {facts['nproc']} CPUs, {facts['memory_gb']:.1f} GB memory, "
          f"load average {' '.join(f'{x:.1f}' for x in facts['load_average'])} at the start")
    tools = f"PostgreSQL {facts['postgresql']}, pg_dump {facts['pg_dump']}, rclone {facts['rclone']}, Python {facts['python']}"
    print(tools + (f", Airflow {facts['airflow']}" if "airflow" in facts else ""))
    print(f"sample shop: scale {args.scale} = {facts['database_bytes'] / MB:.1f} MB, scale {args.small_scale} = "
          f"{facts['small_database_bytes'] / MB:.1f} MB (pg_database_size)", flush=True)


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    print(f"\n{title}")
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())


def print_report(report: dict) -> None:
    s, settings = report["summary"], report["settings"]
    full, base = s["full"], s["full"]["baseline"]
    print(f"\nmedians of {settings['rounds']} rounds at scale {settings['scale']}; restores with {settings['restore_jobs']} jobs; "
          "CPU = client processes only (not the PostgreSQL server's);\npeak RSS = the largest single process, never below the "
          f"measuring process's own {s['restore']['bare']['own_rss_mb']:.0f} MB (Linux carries it into the tools it starts)")
    names = {"baseline": "pg_dump -Fc | rclone rcat (baseline)", "library": "library: capture, upload, verify, manifest",
             "airflow": "bin/backupctl full (Airflow DAG run)"}
    print_table("Full backup", ["", "wall s", "CPU s", "peak RSS MB", "stored MB", "× wall", "× CPU", "× bytes"], [
        [names[name], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['bytes'] / MB:.1f}",
         f"{r['wall_s'] / base['wall_s']:.2f}", f"{r['cpu_s'] / base['cpu_s']:.2f}", f"{r['bytes'] / base['bytes']:.3f}"]
        for name, r in full.items()
    ])
    if "airflow_overhead" in s:
        o, dag_wall = s["airflow_overhead"], full["airflow"]["wall_s"]
        print(f"Airflow's share (DAG run − library path): {o['dag_minus_library_s']:.1f} s = {100 * o['dag_minus_library_s'] / dag_wall:.0f} % "
              f"of the DAG run; of the DAG run, {o['outside_tasks_s']:.1f} s are outside any task (start-up, parsing, scheduling) "
              f"and {o['dag_only_tasks_s']:.1f} s in tasks the library path does not run ({', '.join(DAG_ONLY_TASKS)})")
    lib = full["library"]
    print_table(f"Incremental, chained on the full (full: {lib['bytes'] / MB:.1f} MB, {lib['wall_s']:.1f} s)",
                ["changed", "rows", "stored MB", "% of full", "uncompr. MB", "raw rows MB", "stored/raw", "wall s", "% of full",
                 "apply s", "peak RSS MB"], [
        [f"{r['fraction']:.1%}", f"{r['rows_changed']:,.0f}", f"{r['bytes'] / MB:.2f}", f"{100 * r['bytes'] / lib['bytes']:.2f}",
         f"{r['uncompressed_bytes'] / MB:.2f}", f"{r['raw_changed_bytes'] / MB:.2f}", f"{r['bytes'] / max(r['raw_changed_bytes'], 1):.2f}",
         f"{r['wall_s']:.1f}", f"{100 * r['wall_s'] / lib['wall_s']:.1f}", f"{r['apply_s']:.1f}", f"{r['peak_rss_mb']:.0f}"]
        for r in s["incremental"]
    ])
    print("raw rows = sum(pg_column_size(row)) of the rows captured as changed; apply s = its share of the chain restore")
    bare = s["restore"]["bare"]
    names = {"bare": f"bare pg_restore -j {settings['restore_jobs']} (pg_dump -Fc file)", "full": "full (ChainRestore)",
             "chain": f"full + {len(FRACTIONS)} incrementals"}
    print_table("Restore into an empty database", ["", "wall s", "× bare", "download s", "pg_restore s", "apply s", "check s", "peak RSS MB"], [
        [names[name], f"{r['wall_s']:.1f}", f"{r['wall_s'] / bare['wall_s']:.2f}"]
        + ([f"{r['download_s']:.1f}", f"{r['pg_restore_s']:.1f}", f"{r['apply_total_s']:.1f}", f"{r['check_s']:.1f}"] if name != "bare" else ["", "", "", ""])
        + [f"{r['peak_rss_mb']:.0f}"]
        for name, r in s["restore"].items()
    ])
    small = s["small_scale"]
    print_table("Peak memory (largest process, MB)", ["", f"scale {settings['small_scale']}", f"scale {settings['scale']}", "ratio"], [
        [what, f"{small[key]['peak_rss_mb']:.0f}", f"{big['peak_rss_mb']:.0f}", f"{big['peak_rss_mb'] / small[key]['peak_rss_mb']:.2f}"]
        for what, key, big in (("library full backup", "full", full["library"]), ("restore of the full", "restore", s["restore"]["full"]))
    ])
    print_table("Targets", ["", "target", "measured", "", "vs target"], [
        [t["target"], t["limit_text"], f"{t['measured']:.2f}{t['unit']}", "met" if t["met"] else "MISSED", f"{t['vs_limit_pct']:+.0f} %"]
        for t in report["targets"]
    ])


if __name__ == "__main__":
    main()
