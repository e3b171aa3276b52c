"""Values and names the generator writes: ordinary ones, and the odd ones backups get wrong.

Odd values: bytea of any bytes but NUL, text with tabs, newlines, backslashes, quotes and
non-ASCII, floats -0, NaN and ±Infinity, numerics whose scale shows (1.00), intervals of
every sign and unit, timestamptz literals read under a session TimeZone other than UTC.
Odd names: spaces, quotes, backslashes, non-ASCII and dots — all within LATIN1, so the same
names serve a LATIN1 source.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from hypothesis import strategies as st

PLAIN_NAMES = ("alpha", "beta", "gamma", "delta")
ODD_NAMES = ("Mixed Case", 'quo"te', "back\\slash", "ünï cødé", "apos'trophe")
DOTTED_NAMES = ("dot.ted", "a.b.c")
PLAIN_SCHEMAS = ("s1", "s2")
ODD_SCHEMAS = ("Schéma X",)
DOTTED_SCHEMAS = ("dot.schema",)
VALUE_COLUMN_NAMES = ("v", "note", "amount")
ODD_COLUMN_NAMES = ("Wert ü", 'c"q', "x.y")

# A type of each kind whose text form a backup must carry exactly.
VALUE_TYPES = ("integer", "text", "bytea", "double precision", "numeric", "interval", "timestamp with time zone", "boolean")
OTHER_TIMEZONES = ("Pacific/Chatham", "America/St_Johns", "Asia/Kathmandu")

_ODD_CHARS = st.sampled_from(list("a\t\n\r\\\"',.(){} ;é€😀\x01\x7f"))


def names(odd: bool, dotted: bool) -> tuple[str, ...]:
    return PLAIN_NAMES + (ODD_NAMES if odd else ()) + (DOTTED_NAMES if dotted else ())


def schema_names(odd: bool, dotted: bool) -> tuple[str, ...]:
    return PLAIN_SCHEMAS + (ODD_SCHEMAS if odd else ()) + (DOTTED_SCHEMAS if dotted else ())


def column_names(odd: bool) -> tuple[str, ...]:
    return VALUE_COLUMN_NAMES + (ODD_COLUMN_NAMES if odd else ())


def text_values(odd: bool, latin1: bool, max_size: int = 6) -> st.SearchStrategy[str]:
    if not odd:
        return st.text(st.sampled_from("abcxyz"), max_size=max_size)
    any_char = st.characters(codec="latin-1" if latin1 else "utf-8", exclude_characters="\x00")
    chars = _ODD_CHARS.filter(lambda c: not latin1 or ord(c) < 256) | any_char
    return st.text(chars, max_size=max_size)


def key_values(type_: str, odd: bool, latin1: bool) -> st.SearchStrategy:
    """Keys from a small range, so deletes, reinserts and key updates meet rows that exist."""
    if type_ == "text":
        return st.sampled_from(["a", "b", "c", "a b"]) | text_values(odd, latin1, max_size=3)
    return st.integers(0, 12)


def column_values(type_: str, odd: bool, latin1: bool) -> st.SearchStrategy:
    """A value for a column of ``type_``, as something :meth:`Source.literal` quotes (strings are cast to the type)."""
    if type_ in ("integer", "bigint"):
        plain = st.integers(-1000, 1000)
        return (plain | st.sampled_from([-(2**31), 2**31 - 1])) if odd else plain
    if type_ == "text" or type_.startswith("character varying"):
        return text_values(odd, latin1)
    if type_ == "bytea":
        if odd:
            return st.binary(max_size=8).map(lambda b: b.replace(b"\x00", b"\x01"))
        return st.binary(min_size=1, max_size=4).map(lambda b: b.replace(b"\x00", b"a"))
    if type_ == "double precision":
        plain = st.floats(-1e6, 1e6, allow_nan=False, width=32)
        return (plain | st.sampled_from([-0.0, float("nan"), float("inf"), float("-inf"), 1e-300, 0.1])) if odd else plain
    if type_ == "numeric":
        plain = st.decimals(-1000, 1000, places=2, allow_nan=False)
        odd_numbers = st.sampled_from(["1.00", "1.0", "-0", "0.000", "NaN", "123456789012345678901234567890.5"]).map(Decimal)
        return (plain | odd_numbers) if odd else plain
    if type_ == "interval":
        plain = st.sampled_from(["1 day", "02:00:00"])
        odd_intervals = st.sampled_from(["-1 mons +3 days", "1 year 2 mons -04:05:06", "00:00:00.000001", "P1Y2M3DT4H5M6S", "-178000000 years"])
        return (plain | odd_intervals) if odd else plain
    if type_ == "timestamp with time zone":
        moments = st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1)).map(lambda d: d.isoformat(sep=" "))
        return (moments | st.sampled_from(["infinity", "-infinity", "2024-03-31 02:30:00", "1582-10-10 12:00:00"])) if odd else moments
    if type_ == "boolean":
        return st.booleans()
    raise ValueError(f"no values for type {type_!r}")
