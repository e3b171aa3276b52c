"""How every command prints: aligned tables, JSON on stdout, times in the operator's zone."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def dump_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    print()


def keyed_by_database(values: Mapping[str, object]):
    """JSON for one database is its value as such; for several, an object keyed by database name."""
    return next(iter(values.values())) if len(values) == 1 else values


def local_time(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M %Z")
