"""The incremental object's format (``delta.py``): what is written is read back byte for byte, and a stream
that is cut or corrupted anywhere is refused with :class:`DeltaFormatError` — never read as fewer rows."""

import io
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_steps import execute
from pgbackup.capture import delta
from pgbackup.capture.delta import MAGIC, DeltaFormatError, DeltaReader, DeltaWriter


def written(sections, data_frame: int = delta.MAX_FRAME) -> bytes:
    """The object holding ``sections``: (header, [data chunks as the COPY of the capture writes them])."""
    out = io.BytesIO()
    writer = DeltaWriter(out, data_frame=data_frame)
    for header, chunks in sections:
        with writer.section(header) as sink:
            for chunk in chunks:
                sink.write(chunk)
    writer.close()
    return out.getvalue()


def read_back(data: bytes, read_size: int = -1):
    """Every section of ``data`` as (header, data), each section's data read ``read_size`` bytes at a time."""
    sections = []
    for header, source in DeltaReader(io.BytesIO(data)).sections():
        body = b"".join(iter(lambda source=source: source.read(read_size), b""))
        sections.append((header, body))
    return sections


def header(table="public.t", action="upsert", **extra):
    return {"table": table, "schema": "public", "name": table.split(".")[-1], "action": action,
            "columns": ["id", "v"], "key_columns": ["id"], **extra}


headers = st.builds(
    header,
    table=st.text(min_size=1, max_size=20),  # any text: quotes, tabs, non-ASCII, lone surrogates
    action=st.sampled_from(delta.ACTIONS),
    columns=st.lists(st.text(max_size=10), max_size=4),
)
chunks = st.lists(st.binary(max_size=40), max_size=6)  # empty chunks too: COPY writes what it has


@settings(max_examples=300, deadline=None)
@given(sections=st.lists(st.tuples(headers, chunks), max_size=5), read_size=st.sampled_from([-1, 1, 3, 7, 64]))
def test_sections_round_trip_byte_for_byte(sections, read_size):
    """Frames are cut at 7 bytes here, so rows and lines are split across data frames in every way."""
    data = written(sections, data_frame=7)
    assert read_back(data, read_size) == [(h, b"".join(c)) for h, c in sections]


@settings(max_examples=200, deadline=None)
@given(sections=st.lists(st.tuples(headers, chunks), min_size=1, max_size=3))
def test_lines_of_a_section_are_its_data_split_after_each_newline(sections):
    data = written(sections, data_frame=5)
    got = [list(source.lines()) for _, source in DeltaReader(io.BytesIO(data)).sections()]
    assert got == [io.BytesIO(b"".join(c)).readlines() for _, c in sections]  # split after b"\n" only


def test_a_section_left_unread_is_skipped():
    data = written([(header("public.a"), [b"1\ta\n"]), (header("public.b"), [b"2\tb\n"])])
    reader = DeltaReader(io.BytesIO(data))
    tables = [h["table"] for h, _ in reader.sections()]
    assert tables == ["public.a", "public.b"]


def test_an_empty_object_and_an_empty_section_read_back():
    assert read_back(written([])) == []
    assert read_back(written([(header(action="delete"), [])])) == [(header(action="delete"), b"")]


SAMPLE = [(header("public.a"), [b"1\tone\n2\ttwo\n"]), (header("public.b", "delete"), [b"(3)\n"]), (header("public.c", "replace"), [])]


def test_a_stream_cut_at_any_offset_is_refused():
    data = written(SAMPLE)
    for cut in range(len(data)):
        with pytest.raises(DeltaFormatError):
            read_back(data[:cut])
    assert read_back(data) == [(h, b"".join(c)) for h, c in SAMPLE]


def test_data_after_the_end_is_refused():
    with pytest.raises(DeltaFormatError, match="data after its end"):
        read_back(written(SAMPLE) + b"\0")


def frame_heads(data: bytes) -> list[int]:
    """The offsets of every frame's 5-byte head (type and length) in ``data``."""
    offsets, at = [], len(MAGIC)
    while at < len(data):
        offsets.append(at)
        _, length = struct.unpack(">cI", data[at : at + 5])
        at += 5 + length
    return offsets


@pytest.mark.parametrize("mask", [0x01, 0x10, 0x80, 0xFF])
def test_any_corrupted_byte_of_a_frame_head_or_the_magic_is_refused(mask):
    data = written(SAMPLE)
    positions = list(range(len(MAGIC))) + [at + i for at in frame_heads(data) for i in range(5)]
    for position in positions:
        corrupted = bytearray(data)
        corrupted[position] ^= mask
        with pytest.raises(DeltaFormatError):
            read_back(bytes(corrupted))


def raw_object(*frames: tuple[bytes, bytes]) -> bytes:
    return MAGIC + b"".join(struct.pack(">cI", kind, len(payload)) + payload for kind, payload in frames)


@pytest.mark.parametrize("payload", [b"", b"{", b'{"table": "t", "action": "upsert"', b"[]", b'"upsert"', b"\xff\xfe{}",
                                     json.dumps(header(action="truncate")).encode(), b'{"table": "t"}'],
                         ids=["empty", "cut", "unclosed", "array", "string", "not utf-8", "unknown action", "no action"])
def test_a_header_that_is_not_a_section_header_is_refused(payload):
    with pytest.raises(DeltaFormatError, match="header"):
        read_back(raw_object((b"H", payload), (b"E", b""), (b"Z", b"")))


@pytest.mark.parametrize("frames", [
    [(b"D", b"x"), (b"Z", b"")],  # data outside a section
    [(b"H", json.dumps(header()).encode()), (b"Z", b"")],  # section without its end
    [(b"H", json.dumps(header()).encode()), (b"H", json.dumps(header()).encode())],
    [(b"H", json.dumps(header()).encode()), (b"E", b"xyz"), (b"Z", b"")],  # an end frame carrying bytes
    [(b"Z", b"x")],
], ids=["data outside a section", "no end frame", "header inside a section", "end frame with a payload", "end of stream with a payload"])
def test_frames_out_of_place_are_refused(frames):
    with pytest.raises(DeltaFormatError):
        read_back(raw_object(*frames))


def test_an_empty_data_frame_does_not_end_the_section():
    """A reader that took an empty frame for the end of the data would drop the rows after it."""
    data = raw_object((b"H", json.dumps(header()).encode()), (b"D", b"1\ta\n"), (b"D", b""), (b"D", b"2\tb\n"), (b"E", b""), (b"Z", b""))
    assert read_back(data, 4096) == [(header(), b"1\ta\n2\tb\n")]


def test_a_header_too_big_for_a_frame_is_refused_when_written():
    with pytest.raises(ValueError, match="header"):
        written([(header(columns=["c" * 100] * 20_000), [])])


# -- through PostgreSQL's COPY, as the capture writes and the restore reads ---------------------

TRICKY_TEXT = ["tab\there", "new\nline", "cr\rhere", "back\\slash", "\\N", "\\.", "", " ", "ä ö ü ß", "日本語", "emoji 🎉",
               "\b\f\v\x01\x1f", "quote ' and \"", "a,b(c)", "end\\"]


def test_every_escaping_case_survives_copy_out_the_delta_and_copy_in(make_database):
    """COPY text rows (tabs, newlines, backslashes, non-ASCII, NULL vs '\\N', bytea of every byte, a row over a frame)
    written as a section and copied back in give the same rows; so do their keys' row texts, as delete sections carry them."""
    db = make_database("delta")
    big = "x" * (2 * delta.MAX_FRAME + 17)  # one row spread over three data frames
    execute(db, "CREATE TABLE src (id int PRIMARY KEY, t text, b bytea, j jsonb, a text[], k text)",
            "CREATE TABLE dst (LIKE src)", "CREATE TABLE gone (k text)", "CREATE TABLE dst_empty (LIKE src)")
    conn = db.connect()
    with conn.cursor() as cur:
        for n, text in enumerate(TRICKY_TEXT + [None, big]):
            cur.execute("INSERT INTO src VALUES (%s, %s, %s, %s, %s, %s)",
                        (n, text, bytes(range(256)) if n % 2 else b"", json.dumps({"v": text}), [text, None, "x"], text or f"k{n}"))
        conn.commit()
        out = io.BytesIO()
        writer = DeltaWriter(out)
        for query in ("COPY src TO STDOUT", "COPY (SELECT ROW(k)::text FROM src) TO STDOUT", "COPY (SELECT * FROM src WHERE false) TO STDOUT"):
            with writer.section(header()) as sink:
                cur.copy_expert(query, sink)
        writer.close()
        reader = DeltaReader(io.BytesIO(out.getvalue()))
        for (_, source), table in zip(reader.sections(), ("dst", "gone", "dst_empty")):
            cur.copy_expert(f"COPY {table} FROM STDIN", source)
        cur.execute("SELECT (SELECT count(*) FROM (SELECT * FROM src EXCEPT ALL SELECT * FROM dst) d),"
                    " (SELECT count(*) FROM (SELECT * FROM dst EXCEPT ALL SELECT * FROM src) d),"
                    " (SELECT count(*) FROM dst), (SELECT count(*) FROM src),"
                    " (SELECT count(*) FROM gone g JOIN src s ON g.k = ROW(s.k)::text), (SELECT count(*) FROM dst_empty)")
        assert cur.fetchone() == (0, 0, len(TRICKY_TEXT) + 2, len(TRICKY_TEXT) + 2, len(TRICKY_TEXT) + 2, 0)
        cur.execute("SELECT count(*) FROM dst WHERE t IS NULL")  # NULL stays NULL, the text '\N' stays text
        assert cur.fetchone() == (1,)
    conn.close()
