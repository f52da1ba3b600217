"""Part files' row order (event, person, timestamp within project and month): the Arrow + numpy
sort of the import and bulk writers against Python's own sort of the same keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from sightline.storage.duckdb_parts import _uuid_array, part_order

T0 = datetime(2024, 1, 31, 23, 0, tzinfo=UTC)
PERSONS = [uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128)) for i in range(6)]
# two persons sharing their first 8 bytes: the second half must still separate them
PERSONS += [uuid.UUID(bytes=PERSONS[0].bytes[:8] + bytes(8)), uuid.UUID(bytes=PERSONS[0].bytes[:8] + b"\xff" * 8)]

row = st.tuples(st.integers(1, 2), st.sampled_from(["$pageview", "signed_up", "a"]),
                st.integers(0, len(PERSONS) - 1), st.integers(0, 3 * 3600))


def _keys(rows):
    ts = [T0 + timedelta(seconds=s) for _, _, _, s in rows]
    month = [datetime(t.year, t.month, 1) for t in ts]
    return pa.table({"p": pa.array([p for p, *_ in rows], pa.int32()), "m": pa.array(month, pa.timestamp("us")),
                     "e": pa.array([e for _, e, _, _ in rows]), "t": pa.array(ts, pa.timestamp("us", tz="UTC"))})


def _expected(rows):
    return sorted(((p, T0 + timedelta(seconds=s) >= datetime(2024, 2, 1, tzinfo=UTC), e, PERSONS[k].bytes, s)
                   for p, e, k, s in rows))


def _got(rows, order):
    return [(rows[i][0], T0 + timedelta(seconds=rows[i][3]) >= datetime(2024, 2, 1, tzinfo=UTC), rows[i][1],
             PERSONS[rows[i][2]].bytes, rows[i][3]) for i in order.to_pylist()]


@settings(max_examples=150, deadline=None)
@given(st.lists(row, max_size=60))
def test_part_order_matches_a_plain_sort(rows):
    keys = _keys(rows)
    text = pa.array([str(PERSONS[k]) for _, _, k, _ in rows], pa.string())
    for person in (text, _uuid_array(text) if rows else None, pa.chunked_array([text]) if rows else text):
        order = part_order(keys, person)
        assert sorted(order.to_pylist()) == list(range(len(rows)))
        assert _got(rows, order) == _expected(rows)


def test_part_order_keeps_time_order_within_a_person_and_sorts_odd_ids_as_text():
    rows = [(1, "e", k, s) for k, s in [(1, 30), (0, 20), (1, 10), (0, 5), (1, 20)]]
    order = part_order(_keys(rows), pa.array([str(PERSONS[k]) for _, _, k, _ in rows]))
    assert _got(rows, order) == _expected(rows)
    # ids that are not canonical uuids (upper case, other text, nulls) group by their text
    ids = pa.array(["B", None, "A", "B", "a"])
    order = part_order(_keys([(1, "e", 0, s) for s in (4, 3, 2, 1, 0)]), ids)
    assert [ids[i].as_py() for i in order.to_pylist()] == ["A", "B", "B", "a", None]
    assert order.to_pylist()[1:3] == [3, 0]  # B at t=1 before B at t=4
