"""The one task-run record the CLI prints, whether it came from the REST API or the metadata database."""

from datetime import datetime, timezone

from pgbackup.report.task_runs import TaskRun, exception_message, last_error_line, stalled_warning, task_label

START = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)
END = datetime(2026, 11, 29, 2, 1, 30, tzinfo=timezone.utc)


def test_a_record_survives_the_json_between_the_history_reader_and_the_cli():
    record = TaskRun("pg_full_backup", "backup.upload", "manual__1", "failed", START, END, 2, 0, error="RcloneError: boom",
                     database="shop", heartbeat=END)
    data = record.to_dict()
    assert data["start"] == "2026-11-29T02:00:00+00:00" and data["seconds"] == 90.0 and data["shown_state"] == "failed"
    assert TaskRun.from_dict(data) == record


def test_a_stalled_task_says_since_when_it_was_silent():
    record = TaskRun("pg_full_backup", "backup.dump_compress_checksum", "manual__1", "running", START, None, 1, 0,
                     database="shop", heartbeat=START, stalled=True)
    assert record.shown_state == "running, no heartbeat since 2026-11-29 02:00:00 UTC (killed?)"
    assert record.seconds is None
    assert stalled_warning(record).startswith("DAG pg_full_backup: task backup.dump_compress_checksum [shop] of run manual__1 is running, no")


def test_a_running_task_with_a_recent_heartbeat_shows_as_running():
    assert TaskRun("d", "t", "r", "running", START, None, 1, heartbeat=START).shown_state == "running"


def test_a_mapped_instance_is_labelled_by_its_database_else_its_index():
    assert task_label("backup.upload", 0, "shop") == "backup.upload[shop]"
    assert task_label("backup.upload", 1, None) == "backup.upload[1]"
    assert task_label("check", -1, None) == "check"


def test_the_last_exception_line_of_a_log_is_its_error():
    log = "INFO start\nrclone_provider.client.RcloneError: first\nnoise\npgbackup.config.connections.ConnectionMissing: connection 'x' is not set\n"
    assert last_error_line(log) == "pgbackup.config.connections.ConnectionMissing: connection 'x' is not set"
    assert last_error_line("all fine\n") is None
    assert exception_message("airflow.sdk.exceptions.AirflowFailException: backup full-1 not found") == "backup full-1 not found"
