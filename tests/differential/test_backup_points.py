"""Every backup point restores to exactly the source as it was — or the project refuses, with a reason.

Hypothesis's stateful testing drives a real source database through generated operations
(``operations.py``) interleaved with full and incremental backups.  At each backup point the
oracle (``oracle.py``, this test's own SQL) fingerprints the source and keeps only that
fingerprint.  After each backup the newest point and one earlier point (drawn) are restored
into fresh databases and fingerprinted again: restoring every point after every backup
would make a run quadratic in its backups for little more coverage.

Three outcomes are correct: the restore equals the oracle; the restore refuses
(``RestoreError``); the capture refuses (an error of the library's own).  A restore that
reports success with other data, and any crash, fail the test.

Runs:
- ``make test`` (bounded, the default profile): a few derandomized examples — the same
  sequences on every run, so CI never turns red on a sequence no change of its own caused;
  under ~90 s on 2 cores.
- ``make fuzz`` (``PGBACKUP_FUZZ_EXAMPLES=200``): random sequences, longer ones, and the
  example database ``tests/differential/.examples`` (committed) that keeps every failure
  found and replays it first next time.

``KNOWN_GAPS`` (and ``PGBACKUP_FUZZ_SKIP=family,family``) switch off operation families
(``operations.FAMILIES``) the project is known to get wrong, so the rest can run in CI
before every fix lands.  Default: nothing switched off.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, note, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from differential import operations
from differential.backups import BackupRig, Refusal
from differential.databases import create_database, drop_database, unused_database
from differential.oracle import content_fingerprint, differences
from differential.source import Source

KNOWN_GAPS: set[str] = set()
SKIPPED = KNOWN_GAPS | {f.strip() for f in os.environ.get("PGBACKUP_FUZZ_SKIP", "").split(",") if f.strip()}
_unknown = SKIPPED - set(operations.FAMILIES)
if _unknown:
    raise ValueError(f"PGBACKUP_FUZZ_SKIP names unknown operation families {sorted(_unknown)}; known: {sorted(operations.FAMILIES)}")

EXAMPLES_DIR = Path(__file__).with_name(".examples")
FUZZ_EXAMPLES = int(os.environ.get("PGBACKUP_FUZZ_EXAMPLES", "0"))

settings.register_profile(
    "bounded",
    max_examples=int(os.environ.get("PGBACKUP_BOUNDED_EXAMPLES", "4")),
    stateful_step_count=14,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no explain phase: it re-runs the failure hundreds of times
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=max(FUZZ_EXAMPLES, 1),
    stateful_step_count=30,
    deadline=None,
    database=DirectoryBasedExampleDatabase(EXAMPLES_DIR),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = "fuzz" if FUZZ_EXAMPLES else "bounded"

# What a run did, printed at the end of the module (``-s``) and as Hypothesis events (``--hypothesis-show-statistics``).
TALLY: Counter[str] = Counter()
REFUSALS: Counter[str] = Counter()  # the distinct reasons the project gave, digits blanked


class _Named:
    """An operation printed by its name in a failing example."""

    def __init__(self, operation) -> None:
        self.operation = operation

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.operation.__name__)


def enabled(family: str) -> bool:
    return family not in SKIPPED


def family(name: str):
    return precondition(lambda self: enabled(name))


class BackupPoints(RuleBasedStateMachine):
    """The source, its backups, and the oracle's fingerprint of the source at each backup point."""

    def __init__(self) -> None:
        super().__init__()
        self.work = Path(tempfile.mkdtemp(prefix="pgbackup-fuzz-"))
        self.target = None
        self.source: Source | None = None
        self.points: list[tuple[str, dict]] = []  # (backup id, the oracle's fingerprint of the source then)
        self.latin1 = False
        TALLY["state machine runs"] += 1

    @initialize(data=st.data())
    def create_source(self, data) -> None:
        self.latin1 = enabled("latin1") and data.draw(st.booleans(), label="LATIN1 source")
        self.target = create_database("source", "LATIN1" if self.latin1 else "UTF8")
        self.source = Source(self.target)
        self.rig = BackupRig(self.target, self.work)
        if enabled("triggers"):
            self._run(operations.harness_setup())
        self._run(operations.create_table(self.source, self.source.catalog(), data.draw, enabled))
        self._run(operations.insert_rows(self.source, self.source.catalog(), data.draw, enabled, self.latin1))
        self._back_up("full", data)

    def teardown(self) -> None:
        if self.source is not None:
            self.source.close()
        if self.target is not None:
            drop_database(self.target)
        shutil.rmtree(self.work, ignore_errors=True)

    # -- the operations -------------------------------------------------------------
    def _run(self, transactions: operations.Transactions) -> None:
        for statements in transactions:
            for statement in statements:
                note(statement)
        if not transactions:
            note("-- nothing to do")
            return
        rejected = self.source.run(*transactions)
        if rejected:
            note(f"-- rolled back: {rejected}")
            event("operation rolled back")

    def _apply(self, operation, data, *, values: bool = False) -> None:
        args = (self.source, self.source.catalog(), data.draw, enabled) + ((self.latin1,) if values else ())
        self._run(operation(*args))

    @rule(data=st.data())
    @family("rows")
    def insert_rows(self, data):
        self._apply(operations.insert_rows, data, values=True)

    @rule(data=st.data())
    @family("rows")
    def update_rows(self, data):
        self._apply(operations.update_rows, data, values=True)

    @rule(data=st.data())
    @family("rows")
    def delete_rows(self, data):
        self._apply(operations.delete_rows, data)

    @rule(data=st.data())
    @family("rows")
    def delete_and_reinsert(self, data):
        self._apply(operations.delete_and_reinsert, data, values=True)

    @rule(data=st.data())
    @family("truncate")
    def truncate(self, data):
        self._apply(operations.truncate, data)

    @rule(data=st.data())
    @family("partitions")
    def move_partition_rows(self, data):
        self._apply(operations.move_partition_rows, data)

    @rule(data=st.data())
    @family("matviews")
    def refresh_matview(self, data):
        self._apply(operations.refresh_matview, data)

    @rule(data=st.data())
    @family("large_objects")
    def large_object_change(self, data):
        self._apply(operations.large_object_change, data)

    @rule(data=st.data())
    @family("sequences")
    def advance_sequence(self, data):
        self._apply(operations.advance_sequence, data)

    @rule(data=st.data())
    def change_schema(self, data):
        families = [f for f in operations.SCHEMA_CHANGES if enabled(f)]
        if families:
            operation = data.draw(st.sampled_from([op for f in families for op in operations.SCHEMA_CHANGES[f]]).map(_Named),
                                  label="schema change").operation
            self._apply(operation, data, values=operation is operations.alter_columns)

    # -- backups and the check ------------------------------------------------------------
    @rule(data=st.data())
    def full_backup(self, data):
        self._back_up("full", data)

    @rule(data=st.data())
    def incremental_backup(self, data):
        self._back_up("incremental", data)

    def _back_up(self, kind: str, data) -> None:
        outcome = self.rig.back_up(kind)
        if isinstance(outcome, Refusal):
            self._refused(outcome, "capture refused")
            return
        # Nothing writes to the source during the capture, so the source now is the source at the backup point.
        self.points.append((outcome.id, content_fingerprint(self.target)))
        note(f"-- {kind} backup -> {outcome.kind} {outcome.id} (point {len(self.points)})")
        TALLY[f"{outcome.kind} backups"] += 1
        earlier = len(self.points) - 1
        chosen = [earlier]
        if earlier:
            chosen.append(data.draw(st.integers(0, earlier - 1), label="earlier point to restore"))
        for index in chosen:
            self._check_point(index)

    def _check_point(self, index: int) -> None:
        backup_id, expected = self.points[index]
        restored = unused_database("restored")  # created by the restore, in the source's encoding and locale
        try:
            outcome = self.rig.restore(backup_id, restored)
            if isinstance(outcome, Refusal):
                self._refused(outcome, "restore refused")
                return
            actual = content_fingerprint(restored)
        finally:
            drop_database(restored)
        diff = differences(expected, actual)
        if diff:
            message = (f"restore of point {index + 1} ({backup_id}) reported success but differs from the source "
                       f"at that point:\n  " + "\n  ".join(diff))
            MISMATCH_BY_KIND.get(diff[0].split(" ")[0], _differs)(message)
        TALLY["restores exact"] += 1
        event("restore exact")

    def _refused(self, refusal: Refusal, what: str) -> None:
        note(f"-- {refusal}")
        TALLY[what] += 1
        REFUSALS[re.sub(r"\d+", "N", f"{what}: {type(refusal.error).__name__}: {refusal.error}")[:300]] += 1
        event(f"{what}: {type(refusal.error).__name__}")


class RestoreMismatch(AssertionError):
    """A restore that reported success gave other content than the source had at the backup point."""


# One raising line per kind of object, because Hypothesis tells failures apart by where they are raised:
# a run then shrinks and reports, say, a large-object loss and a table difference each on its own.
def _differs_in_tables(message):
    raise RestoreMismatch(message)


def _differs_in_matviews(message):
    raise RestoreMismatch(message)


def _differs_in_sequences(message):
    raise RestoreMismatch(message)


def _differs_in_triggers(message):
    raise RestoreMismatch(message)


def _differs_in_large_objects(message):
    raise RestoreMismatch(message)


def _differs(message):
    raise RestoreMismatch(message)


MISMATCH_BY_KIND = {"table": _differs_in_tables, "partitioned": _differs_in_tables, "materialized": _differs_in_matviews,
                    "sequence": _differs_in_sequences, "trigger": _differs_in_triggers, "large": _differs_in_large_objects}

def backup_points() -> BackupPoints:
    """The machine's factory, and so the example database's key.

    Hypothesis keys a stateful test by its factory's source: with the class as the
    factory, every edit of the machine would move its saved failures under a new key,
    where no run looks (``make fuzz`` would replay nothing).  This function's source
    does not change when the machine does.
    """
    return BackupPoints()


def test_backup_points():
    run_state_machine_as_test(backup_points, settings=settings.get_profile(PROFILE))


@pytest.fixture(scope="module", autouse=True)
def _print_tally():
    yield
    print(f"\ndifferential backup test ({PROFILE} profile, skipped families: {sorted(SKIPPED) or 'none'}): "
          + ", ".join(f"{n} {what}" for what, n in sorted(TALLY.items())))
    for reason, n in REFUSALS.most_common():
        print(f"  {n} x {reason}")
