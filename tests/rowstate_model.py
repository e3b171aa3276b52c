"""What the row-key state's model tests draw and compare: a parent's rows, what happened to each, the rows now."""

from __future__ import annotations

from hypothesis import strategies as st

HASHES = st.binary(min_size=16, max_size=16).map(lambda raw: raw.hex().encode())
SAME_ROW_AGAIN = {"re-sent", "delete and insert the same row"}  # a newer xmin, the same row: sent again, harmlessly


def draw_changes(draw, keys, ops, parent_size: int, new_size: int) -> tuple[dict, dict, dict]:
    """``(parent, current, changed)`` rows by printed key: each parent row kept, updated, deleted (and maybe inserted
    again) or sent again as ``ops`` draws, then rows under new keys inserted."""
    parent = draw(st.dictionaries(keys, HASHES, max_size=parent_size))
    current, changed = {}, {}
    for key, md5 in parent.items():
        op = draw(ops)
        if op == "keep":
            current[key] = md5
        elif op in SAME_ROW_AGAIN:
            current[key] = changed[key] = md5
        elif op != "delete":  # updated, or deleted and inserted again under the same key
            current[key] = changed[key] = draw(HASHES)
    for key, md5 in draw(st.dictionaries(keys, HASHES, max_size=new_size)).items():
        if key not in parent:
            current[key] = changed[key] = md5
    return parent, current, changed


def model_fingerprint(rows: dict) -> dict:
    """rows, sum of the signed high halves, sum of the signed low halves of the md5s: the SQL's, in plain Python."""
    halves = [(int.from_bytes(bytes.fromhex(h[:16].decode()), "big", signed=True),
               int.from_bytes(bytes.fromhex(h[16:].decode()), "big", signed=True)) for h in rows.values()]
    return {"rows": len(rows), "hash": f"{sum(h for h, _ in halves)}:{sum(low for _, low in halves)}"}
