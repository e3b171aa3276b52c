"""Compare ways of compressing a full backup, so that the choice rests on measurements.

The project's issue asks for the dump compression to be chosen by measurement.
``pgbackup.capture.compression.Compression`` streams ``pg_dump -Fc -Z0`` through
multi-threaded zstd level 3 in-process. This script checks that choice against
pg_dump's own gzip (default, -Z1, -Z9), no compression, the zstd CLI at several
levels, and the project's own path at levels 1, 3 and 6. Every method dumps the
same scratch database ``--rounds`` times. The script prints the medians of wall
time, CPU time (pg_dump, zstd and this Python process) and output size next to
the pg_dump default. It is a benchmark, not a test, and asserts nothing.

Run from the repository root; at scale 40 it takes a few minutes::

    PYTHONPATH=plugins .venv/bin/python bench/compression.py --scale 40

The table goes to stdout and the same data to ``bench/results/compression.json``.
The scratch database is dropped at the end, also after an error or Ctrl-C,
unless ``--keep-db`` is given. Dumps are written to a temporary directory, one
at a time, and deleted as soon as they have been measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import zstandard

from pgbackup.capture.compression import Compression
from pgbackup.capture.dump import PgDump
from pgbackup.postgres.target import PgTarget, PgTools, tools_for_server
from sample_shop import seed_sample_shop

RESULTS = Path(__file__).resolve().parent / "results" / "compression.json"
BASELINE = "pg_dump -Fc (gzip default)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=40, help="sample shop scale; 1 is about 4 MB of tables (default: 40)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per method, the median is reported (default: 3)")
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database behind")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432", help="server to use; any database in it is ignored")
    args = parser.parse_args()

    server = PgTarget.from_url(urlsplit(args.pg_url)._replace(path="/postgres").geturl())
    target = server.with_database(f"pgbackup_bench_{uuid.uuid4().hex[:8]}")
    _execute(server, f'CREATE DATABASE "{target.dbname}"')
    try:
        _seed(target, args.scale)
        report = _benchmark(target, args.rounds)
        report["scale"] = args.scale
        _print(report)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten to {RESULTS}")
    finally:
        if args.keep_db:
            print(f"kept database {target.dbname}", file=sys.stderr)
        else:
            _execute(server, f'DROP DATABASE IF EXISTS "{target.dbname}" WITH (FORCE)')


def _execute(server: PgTarget, statement: str) -> None:
    with closing(server.connect()) as conn:
        conn.autocommit = True
        conn.cursor().execute(statement)


def _seed(target: PgTarget, scale: int) -> None:
    """Fill the database from a child process, so the seeder's memory stays out of this process's peak RSS."""
    print(f"seeding {target.dbname} at scale {scale} ...", file=sys.stderr)
    child = multiprocessing.Process(target=_seed_in_child, args=(target, scale))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"seeding the sample shop failed (exit code {child.exitcode})")


def _seed_in_child(target: PgTarget, scale: int) -> None:
    conn = target.connect()
    try:
        seed_sample_shop(conn, scale=scale)
    finally:
        conn.close()


def _benchmark(target: PgTarget, rounds: int) -> dict:
    version_num, version = target.server_version()
    tools = tools_for_server(version_num)
    report = {"facts": _facts(target, tools, version), "rounds": rounds, "methods": [],
              "rss_mib_before_dumps": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with target.libpq_env() as env, tempfile.TemporaryDirectory(prefix="pgbackup-bench-") as tmp:
        out = Path(tmp, "dump")
        for name, produce in _methods(target, tools, env, version):
            print(f"{name} ...", file=sys.stderr)
            runs = [_measure(produce, out) for _ in range(rounds)]
            median = {key: statistics.median(run[key] for run in runs) for key in ("wall_s", "cpu_s", "bytes")}
            report["methods"].append({"method": name, **median, "bytes": round(median["bytes"]), "runs": runs})
            if name == "pgbackup zstd -3 (project)":
                report["peak_rss_mib_after_project_level_3"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = report["methods"][0]
    for row in report["methods"]:
        row["pct_of_baseline_bytes"] = 100 * row["bytes"] / base["bytes"]
        row["x_baseline_wall"] = row["wall_s"] / base["wall_s"]
    return report


def _facts(target: PgTarget, tools: PgTools, version: str) -> dict:
    with target.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        (db_bytes,) = cur.fetchone()
    conn.close()
    zstd_cli = subprocess.run(["zstd", "-V"], capture_output=True, text=True, check=True).stdout.strip("* \n")
    return {
        "nproc": os.cpu_count(),
        "postgresql": version,
        "pg_dump": tools.version,
        "database_bytes": db_bytes,
        "zstd_cli": zstd_cli,
        "python_zstandard": f"{zstandard.__version__} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})",
    }


def _methods(target: PgTarget, tools: PgTools, env: dict, version: str) -> list[tuple[str, Callable[[Path], None]]]:
    """The baseline comes first, since every ratio is taken against it.

    The project's level 3 is its first in-process method, so the process's RSS
    high-water mark read right after it belongs to that level and no other.
    """
    def pg_dump(*flags: str) -> Callable[[Path], None]:
        return lambda out: subprocess.run([tools.pg_dump, "-Fc", *flags, "-f", str(out)], env=env, check=True)

    def zstd_cli(level: int) -> Callable[[Path], None]:
        return lambda out: _pipe_through_zstd(tools.pg_dump, env, level, out)

    def project(level: int) -> Callable[[Path], None]:
        return lambda out: PgDump(target, tools, Compression(level=level)).run(out)

    return [
        (BASELINE, pg_dump()),
        ("pg_dump -Fc -Z1", pg_dump("-Z1")),
        ("pg_dump -Fc -Z0", pg_dump("-Z0")),
        ("pg_dump -Fc -Z9", pg_dump("-Z9")),
        *((f"pg_dump -Z0 | zstd -{level} -T0", zstd_cli(level)) for level in (1, 3, 6, 10)),
        *((f"pgbackup zstd -{level} (project)", project(level)) for level in (3, 1, 6)),
    ]


def _pipe_through_zstd(pg_dump: str, env: dict, level: int, out: Path) -> None:
    """``pg_dump -Z0 | zstd``, fsynced at the end as pg_dump and PgDump do with their own output."""
    with open(out, "xb") as sink:
        with subprocess.Popen([pg_dump, "-Fc", "-Z0"], stdout=subprocess.PIPE, env=env) as dump, \
                subprocess.Popen(["zstd", "-q", f"-{level}", "-T0"], stdin=dump.stdout, stdout=sink) as zstd:
            dump.stdout.close()  # only zstd reads the pipe, so pg_dump sees it close if zstd dies
        if dump.returncode or zstd.returncode:
            raise RuntimeError(f"pg_dump exited {dump.returncode}, zstd exited {zstd.returncode}")
        os.fsync(sink.fileno())


def _measure(produce: Callable[[Path], None], out: Path) -> dict:
    """One run: wall time, CPU of the waited-for children plus this process, and the size of what it wrote."""
    children, cpu, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time(), time.perf_counter()
    produce(out)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu + (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    size = out.stat().st_size
    out.unlink()
    return {"wall_s": wall, "cpu_s": cpu, "bytes": size}


def _print(report: dict) -> None:
    facts = report["facts"]
    print(f"nproc {facts['nproc']}, PostgreSQL {facts['postgresql']}, pg_dump {facts['pg_dump']}, "
          f"database {facts['database_bytes'] / 2**20:.0f} MiB (sample shop scale {report['scale']})")
    print(f"{facts['zstd_cli']}; python-zstandard {facts['python_zstandard']}")
    print(f"median of {report['rounds']} rounds; ratios against {BASELINE}\n")
    width = max(len(row["method"]) for row in report["methods"])
    print(f"{'method':<{width}}  {'wall s':>7}  {'CPU s':>7}  {'bytes':>13}  {'% bytes':>7}  {'x wall':>6}")
    for row in report["methods"]:
        print(f"{row['method']:<{width}}  {row['wall_s']:>7.2f}  {row['cpu_s']:>7.2f}  {row['bytes']:>13,}  "
              f"{row['pct_of_baseline_bytes']:>6.1f}%  {row['x_baseline_wall']:>6.2f}")
    print(f"\npeak RSS of this process after the project's level 3: {report['peak_rss_mib_after_project_level_3']:.0f} MiB "
          f"({report['rss_mib_before_dumps']:.0f} MiB before any dump)")


if __name__ == "__main__":
    main()
