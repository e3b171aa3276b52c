"""What a running Airflow costs while no backup runs, for several ``scheduler_idle_sleep_time`` values.

``make bench`` shows a DAG run on a running scheduler spending seconds between its tasks:
with nothing to do, the scheduler sleeps ``[scheduler] scheduler_idle_sleep_time`` (Airflow's
default, 1 s) before it looks again, so each of a backup's tasks may wait for it.  A shorter
sleep shortens the run (``bench/run.py --airflow-env AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.1``
measures by how much) and costs CPU all day long, every idle loop querying the metadata
database.  This prints that cost: the CPU of the api-server, scheduler and dag-processor
(``bench/airflow_scheduler.py``'s ``RunningAirflow``, as the bench starts them: LocalExecutor,
SQLite) over ``--seconds`` of idling, as a share of one core and as CPU-seconds a day.

    .venv/bin/python bench/scheduler_idle.py                    # 1, 0.2 and 0.1 s: about 5 minutes
    .venv/bin/python bench/scheduler_idle.py --sleeps 1,0.5 --seconds 120

A benchmark, not a test: it asserts nothing.  The components run on a throwaway AIRFLOW_HOME
with this project's DAGs, which stay paused (nothing is triggered).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT / "plugins")]

from airflow_scheduler import RunningAirflow  # noqa: E402

SETTLE_S = 20  # after start-up: the dag-processor's first parse of every DAG file is not idling


def idle_cpu(sleep: str, seconds: float) -> float:
    """The components' CPU per wall second over ``seconds`` of idling with ``scheduler_idle_sleep_time = sleep``."""
    with tempfile.TemporaryDirectory(prefix="pgbackup-idle-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKUP_"))}
        env.update(
            AIRFLOW_HOME=str(work / "home"), AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT / "plugins"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=sleep,
            AIRFLOW_CONN_BACKUP_SOURCE="postgresql://postgres@127.0.0.1:5432/postgres",
            AIRFLOW_CONN_BACKUP_REMOTE=json.dumps({"conn_type": "rclone", "extra": {"type": "local", "root": str(work / "remote")}}),
            BACKUP_LOCAL_DIR=str(work / "local"),
        )
        (work / "home").mkdir()
        subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)
        with RunningAirflow(env, work / "components", work / "logs") as running:
            time.sleep(SETTLE_S)
            cpu, started = running.cpu_s(), time.monotonic()
            time.sleep(seconds)
            return (running.cpu_s() - cpu) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sleeps", default="1,0.2,0.1", help="comma-separated scheduler_idle_sleep_time values (default: 1,0.2,0.1)")
    parser.add_argument("--seconds", type=float, default=60, help="how long each idles while measured (default: 60)")
    args = parser.parse_args()
    sleeps = [value.strip() for value in args.sleeps.split(",")]
    try:
        if any(float(value) <= 0 for value in sleeps) or args.seconds <= 0:
            raise ValueError
    except ValueError:
        parser.error(f"--sleeps must be positive numbers, --seconds positive, got {args.sleeps!r} and {args.seconds}")
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")
    print(f"\n{'scheduler_idle_sleep_time s':>28}  {'% of a core':>11}  {'CPU s a day':>11}")
    for sleep in sleeps:
        share = idle_cpu(sleep, args.seconds)
        print(f"{sleep:>28}  {share * 100:>11.1f}  {share * 86400:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
