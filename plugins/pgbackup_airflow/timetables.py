"""The backup DAGs' timetables, built once here, and their next run as Airflow's scheduler computes it.

``backupctl status`` shows when each DAG runs next.  It asks the very
timetable the DAG uses, decoded the way the scheduler decodes a serialized
DAG, rather than a cron library of its own: around a daylight-saving change
(Europe/Berlin's 02:00–03:00 happens twice on 2027-10-31) a cron library and
Airflow disagree about which 02:00 is meant, and only Airflow's answer is when
the run will start.
"""

from __future__ import annotations

from datetime import datetime

import pendulum
from airflow.sdk import CronTriggerTimetable
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables.base import TimeRestriction


def backup_timetable(cron: str, timezone: str) -> CronTriggerTimetable:
    """The timetable every backup DAG runs on: ``cron`` in ``timezone``, a run at each point."""
    return CronTriggerTimetable(cron, timezone=timezone)


def next_run(cron: str, timezone: str, now: datetime) -> datetime:
    """When the scheduler starts the next run of a DAG on ``backup_timetable(cron, timezone)`` at or after ``now`` (UTC)."""
    scheduled = decode_timetable(encode_timetable(backup_timetable(cron, timezone)))
    info = scheduled.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=pendulum.instance(now), latest=None, catchup=True)
    )
    return pendulum.instance(info.run_after).in_timezone("UTC")
