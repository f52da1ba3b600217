"""Capture workers (`serve --capture-workers N`): a request prepared in a helper process is
stored exactly as the inline path stores it (events, persons, merges, groups, dedup)."""

from __future__ import annotations

import gzip
import uuid as _uuid
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa
import pytest

import sightline
from sightline.ingest.capture_pool import prepare, read_table
from sightline.ingest.decode import decode_capture
from sightline.ingest.normalize import normalize_batch
from sightline.storage.schema import EVENT_BATCH_SCHEMA, events_to_arrow
from sightline.web.capture import sent_at_of
from sightline.web.client_ip import apply_ip_policy

UTC = timezone.utc
NOW = datetime.now(UTC).replace(microsecond=0)


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _u(n: int) -> str:
    return str(_uuid.UUID(int=(0x0190A6B0 << 96) | n))


def _ev(n: int, name: str, did: str, minutes: float, **extra) -> dict:
    props = extra.pop("properties", {})
    return {"event": name, "distinct_id": did, "uuid": _u(n),
            "timestamp": _iso(NOW - timedelta(minutes=minutes)),
            "properties": {"$current_url": f"https://x.test/{n}", "$browser": "Chrome", **props}, **extra}


def _requests() -> list[dict]:
    """Request bodies that exercise every identity rule, in an order where it matters."""
    return [
        {"api_key": "T", "batch": [_ev(1, "$pageview", "anon-1", 30), _ev(2, "$pageview", "anon-1", 29.5),
                                   _ev(3, "clicked", "anon-2", 29)]},
        # identify merges anon-1 into user-1; a plain event of user-1 before and after
        {"api_key": "T", "batch": [_ev(4, "$pageview", "user-1", 28),
                                   _ev(5, "$identify", "user-1", 27.5, properties={"$anon_distinct_id": "anon-1"},
                                       **{"$set": {"email": "u1@x.test"}}),
                                   _ev(6, "$pageview", "user-1", 27),
                                   _ev(7, "$pageview", "anon-1", 26.9)]},
        # person updates, groups, personless, an older event moving created_at back, a duplicate
        {"api_key": "T", "batch": [_ev(8, "upgraded", "user-1", 26, properties={"$set_once": {"plan": "pro"}}),
                                   _ev(9, "$groupidentify", "user-1", 25.5,
                                       properties={"$group_type": "company", "$group_key": "acme",
                                                   "$group_set": {"name": "Acme"}}),
                                   _ev(10, "clicked", "user-1", 25, properties={"$groups": {"company": "acme"}}),
                                   _ev(11, "ping", "anon-3", 24, properties={"$process_person_profile": False}),
                                   _ev(12, "$pageview", "anon-2", 59),
                                   _ev(3, "clicked", "anon-2", 29),  # an SDK retry: dropped
                                   _ev(13, "$pageview", "user-2", 20, properties={"$ip": "10.1.2.3"}),
                                   {"event": "", "distinct_id": "x"},  # rejected
                                   _ev(14, "$unsetter", "user-1", 19, **{"$unset": ["plan"]})]},
        # alias and merge_dangerously; a plain event of a brand new id after them
        {"api_key": "T", "batch": [_ev(15, "$create_alias", "user-2", 18, properties={"alias": "anon-4"}),
                                   _ev(16, "$merge_dangerously", "user-1", 17, properties={"alias": "user-2"}),
                                   _ev(17, "$pageview", "anon-4", 16), _ev(18, "$pageview", "new-1", 15)]},
    ]


def _bodies(token: str) -> list[bytes]:
    return [gzip.compress(orjson.dumps({**r, "api_key": token, "sent_at": _iso(NOW)})) for r in _requests()]


def test_prepare_gives_the_inline_rows():
    specials: set[str] = set()
    for body in _bodies("phc_x"):
        p = prepare(body, {}, "application/json", "gzip", False, 1 << 20, now=NOW)
        req = decode_capture(body, query={}, content_type="application/json", content_encoding="gzip",
                             legacy=False, max_bytes=1 << 20)
        batch = normalize_batch(req.events, now=NOW, sent_at=sent_at_of(req))
        apply_ip_policy(batch.events, None)
        expected = events_to_arrow(batch.events, [0] * len(batch.events), NOW)
        table = read_table(p.table)
        assert table.schema == EVENT_BATCH_SCHEMA
        assert table.equals(expected)
        assert p.token == "phc_x" and p.received == len(req.events) and p.stored == len(batch.events)
        assert [r.to_json() for r in p.rejected] == [r.to_json() for r in batch.rejected]
        assert p.ts_us == [(e.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
                           for e in batch.events]
        assert all(batch.events[i].uuid == e.uuid for i, e in p.specials)
        specials.update(e.uuid for _, e in p.specials)
    # exactly the events the full identity rules must see travel whole: identity events, person
    # updates, groups, personless ($ip alone does not count)
    assert specials == {_u(n) for n in (5, 8, 9, 10, 11, 14, 15, 16)}
    assert [prepare(b, {}, "application/json", "gzip", False, 1 << 20).had_ip for b in _bodies("t")] == \
        [False, False, True, False]


def test_prepare_raises_what_the_inline_path_raises():
    from sightline.errors import AuthenticationFailed, InvalidInput

    with pytest.raises(InvalidInput):
        prepare(b"{not json", {}, "application/json", None, False, 1 << 20)
    with pytest.raises(AuthenticationFailed):
        prepare(orjson.dumps({"batch": [_ev(1, "e", "d", 1)]}), {}, "application/json", None, False, 1 << 20)


def _stored(core) -> tuple[list, list, list]:
    core.sync()
    events = core.storage.execute(
        "select uuid::varchar, event, distinct_id, person_id::varchar, timestamp, properties::varchar, "
        "group_0, group_1, mat_browser, session_id from events order by uuid").rows
    persons = core.storage.execute(
        "select id::varchar, created_at, properties::varchar, is_identified, version from persons order by id").rows
    other = core.storage.execute(
        "select project_id, distinct_id, person_id::varchar from person_distinct_ids order by all").rows
    other += core.storage.execute(
        "select old_person_id::varchar, override_person_id::varchar from person_overrides order by all").rows
    other += core.storage.execute(
        "select source_person_id::varchar, target_person_id::varchar, reason from person_merges order by all").rows
    other += core.storage.execute("select * from groups order by all").rows
    return events, persons, other


def test_the_writer_stores_prepared_requests_as_it_stores_events(tmp_path):
    inline = sightline.open(tmp_path / "inline")
    pooled = sightline.open(tmp_path / "pooled")
    try:
        project_id = inline.bootstrap_info.project.id
        assert pooled.bootstrap_info.project.id == project_id
        for body in _bodies("t"):
            # inline: what the capture endpoint does without workers
            req = decode_capture(body, query={}, content_type="application/json", content_encoding="gzip",
                                 legacy=False, max_bytes=1 << 20)
            batch = normalize_batch(req.events, now=NOW, sent_at=sent_at_of(req))
            apply_ip_policy(batch.events, None)
            want = inline.writer.write(project_id, batch.events)
            p = prepare(body, {}, "application/json", "gzip", False, 1 << 20, now=NOW)
            got = pooled.writer.submit_table(project_id, p.table, p.ts_us, p.specials).result()
            assert (got.stored, got.duplicates) == (want.stored, want.duplicates)
        # a whole request of retries: nothing stored, all duplicates
        p = prepare(_bodies("t")[0], {}, "application/json", "gzip", False, 1 << 20, now=NOW)
        got = pooled.writer.submit_table(project_id, p.table, p.ts_us, p.specials).result()
        assert (got.stored, got.duplicates) == (0, 3)
        a, b = _stored(inline), _stored(pooled)
        assert len(a[0]) == 18 and a[1] and a[2]
        assert any(row[6] == "acme" for row in a[0]), "the grouped event carries its group"
        # created_at (ingestion time) differs between two runs; everything else is the same
        assert a == b
    finally:
        inline.close()
        pooled.close()


def test_the_table_path_replays_from_the_log(tmp_path):
    """A prepared request's log record restores the same rows after a crash (no flush)."""
    core = sightline.open(tmp_path / "d")
    project_id = core.bootstrap_info.project.id
    for body in _bodies("t"):
        p = prepare(body, {}, "application/json", "gzip", False, 1 << 20, now=NOW)
        core.writer.submit_table(project_id, p.table, p.ts_us, p.specials).result()
    before = _stored(core)
    core.close()
    # the log replays into an empty store: drop the store file, keep the log
    (tmp_path / "d" / "events.duckdb").unlink()
    wal = tmp_path / "d" / "events.duckdb.wal"
    if wal.exists():
        wal.unlink()
    again = sightline.open(tmp_path / "d")
    try:
        again.writer  # opening the writer replays the log
        after = _stored(again)
        assert after[0] == before[0]
        assert after[1] == before[1]
    finally:
        again.close()


def test_no_specials_and_a_batch_mixed_with_inline_items(tmp_path):
    """One group commit may hold event lists and prepared tables: both stored, in order."""
    core = sightline.open(tmp_path / "d")
    try:
        pid = core.bootstrap_info.project.id
        body = gzip.compress(orjson.dumps({"api_key": "t", "batch": [_ev(100 + i, "$pageview", f"m{i % 3}", 5 - i)
                                                                     for i in range(5)]}))
        p = prepare(body, {}, "application/json", "gzip", False, 1 << 20, now=NOW)
        assert p.specials == []
        f1 = core.writer.submit_table(pid, p.table, p.ts_us, p.specials)
        res = core.ingest([_ev(200, "$pageview", "m0", 1), _ev(101, "$pageview", "m1", 4)])
        assert f1.result().stored == 5
        assert (res.stored, res.duplicates) == (1, 1)
        rows = core.storage.execute("select distinct_id, count(*), count(distinct person_id) from events "
                                    "group by 1 order by 1").rows
        assert rows == [("m0", 3, 1), ("m1", 2, 1), ("m2", 1, 1)]
        assert pa.array([r[0] for r in rows]).to_pylist() == ["m0", "m1", "m2"]
    finally:
        core.close()
