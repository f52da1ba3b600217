"""Bulk import into partition files: held-back batches, the part-writer thread, dedup across
batches not stored yet, rejections, persons, and files per (project, month)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sightline
from sightline.ingest import bulk
from sightline.persons.identity import person_uuid

UTC = timezone.utc
T0 = datetime(2024, 3, 30, tzinfo=UTC)  # the rows cross into April


def _rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        out.append({"event": ["$pageview", "signed_up", "purchase"][i % 3], "distinct_id": f"user_{i % 37}",
                    "timestamp": T0 + timedelta(minutes=7 * i),
                    "properties": orjson.dumps({"$browser": ["Chrome", "Safari"][i % 2], "$pathname": f"/p{i % 5}",
                                                "n": i}).decode(),
                    "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, str(i)))})
    return out


def _write(path, rows):
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(
        [("event", pa.string()), ("distinct_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
         ("properties", pa.string()), ("uuid", pa.string())])), path)


@pytest.fixture
def small_parts(monkeypatch):
    # tiny batches and hand-overs: several part files per import, dedup across pending batches
    monkeypatch.setattr(bulk, "PART_ROWS", 250)
    real = bulk.read_batches
    monkeypatch.setattr(bulk, "read_batches", lambda path, fmt="auto", batch_rows=bulk.BATCH_ROWS:
                        real(path, fmt, batch_rows=100))


def test_import_held_back_batches_dedup_rejections_and_months(tmp_path, small_parts):
    good = _rows(1000)
    bad = [
        {**good[0], "uuid": str(uuid.uuid4()), "event": "  "},                      # missing_event_name
        {**good[1], "uuid": str(uuid.uuid4()), "distinct_id": ""},                  # missing_distinct_id
        {**good[2], "uuid": str(uuid.uuid4()), "properties": "[1, 2]"},            # invalid_properties
        {**good[3], "uuid": "nope"},                                                 # invalid_uuid
    ]
    spaced = {**good[4], "uuid": str(uuid.uuid4()), "properties": '\n  {"$browser": "Edge"}'}
    repeats = [dict(good[5]), dict(good[900])]  # same uuids again, in later batches
    path = tmp_path / "events.parquet"
    _write(path, good[:600] + bad + [spaced] + good[600:] + repeats)

    with sightline.open(tmp_path / "d") as core:
        summary = bulk.import_files(core, [path], progress=False)
        assert summary.loaded == len(good) + 1
        assert summary.duplicates == 2
        assert dict(summary.rejected) == {"missing_event_name": 1, "missing_distinct_id": 1,
                                          "invalid_properties": 1, "invalid_uuid": 1}
        stored = core.storage.execute(
            "SELECT CAST(uuid AS VARCHAR), event, distinct_id, CAST(person_id AS VARCHAR), mat_browser, "
            "mat_pathname, timestamp FROM events").rows
        expected = good + [spaced]
        assert sorted(r[0] for r in stored) == sorted(r["uuid"] for r in expected)
        assert Counter(r[1] for r in stored) == Counter(r["event"] for r in expected)
        assert Counter(r[4] for r in stored) == Counter(orjson.loads(r["properties"])["$browser"] for r in expected)
        assert Counter(r[5] for r in stored) == Counter(orjson.loads(r["properties"]).get("$pathname")
                                                        for r in expected)
        pid = core.resolve_project(None).id
        assert all(r[3] == person_uuid(pid, r[2]) for r in stored)
        # one person per distinct_id, created at its first event
        persons = dict(core.storage.execute(
            "SELECT CAST(id AS VARCHAR), created_at FROM persons").rows)
        firsts: dict[str, datetime] = {}
        for r in expected:
            firsts[r["distinct_id"]] = min(firsts.get(r["distinct_id"], r["timestamp"]), r["timestamp"])
        assert {person_uuid(pid, d): t for d, t in firsts.items()} == persons
        # files: partitioned by month, sorted by (event, person_id, timestamp), small ones merged at the end
        parts = core.storage.part_files()
        months = Counter(p.month.strftime("%Y-%m") for p in parts)
        assert set(months) == {"2024-03", "2024-04"} and all(n == 1 for n in months.values())
        assert sum(p.rows for p in parts) == len(expected)
        for p in parts:
            t = pq.read_table(core.storage.parts_dir / p.name, columns=["event", "person_id", "timestamp"])
            keys = list(zip(t.column("event").to_pylist(), t.column("person_id").to_pylist(),
                            t.column("timestamp").to_pylist()))
            assert keys == sorted(keys)
            assert p.min_timestamp == min(k[2] for k in keys) and p.max_timestamp == max(k[2] for k in keys)

        # the same file again: every row is a duplicate, nothing new is stored
        again = bulk.import_files(core, [path], progress=False)
        assert again.loaded == 0 and again.duplicates == len(expected) + 2
        assert core.storage.execute("SELECT count(*) FROM events").rows[0][0] == len(expected)


def test_a_failing_batch_keeps_what_was_resolved_before_it(tmp_path, small_parts):
    good = _rows(400)
    path = tmp_path / "a.parquet"
    _write(path, good)
    broken = tmp_path / "b.parquet"
    pq.write_table(pa.table({"nothing": ["x"]}), broken)  # no event / distinct_id columns
    with sightline.open(tmp_path / "d") as core:
        with pytest.raises(Exception):
            bulk.import_files(core, [path, broken], progress=False)
        assert core.storage.execute("SELECT count(*) FROM events").rows[0][0] == len(good)


def test_a_unit_commits_its_files_and_persons_together(tmp_path, small_parts, monkeypatch):
    """Units of PART_ROWS rows are stored one transaction each (files + the persons they need):
    when writing the second unit fails, the first is stored with exactly its persons, nothing of
    the second is (not even in the writer's memory), and a rerun stores the rest."""
    rows = _rows(1000)
    for i, r in enumerate(rows):
        r["distinct_id"] = f"user_{i // 2}"  # new persons all along the file
    path = tmp_path / "events.parquet"
    _write(path, rows)
    from sightline.storage import duckdb_parts

    real = duckdb_parts.PartsMixin.write_import_part_files
    calls = []

    def flaky(self, events):
        calls.append(events.num_rows)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, events)

    monkeypatch.setattr(duckdb_parts.PartsMixin, "write_import_part_files", flaky)
    with sightline.open(tmp_path / "d") as core:
        with pytest.raises(OSError):
            bulk.import_files(core, [path], progress=False)
        pid = core.resolve_project(None).id
        stored = core.storage.execute("SELECT DISTINCT distinct_id FROM events").rows
        persons = core.storage.execute("SELECT CAST(id AS VARCHAR) FROM persons").rows
        assert 0 < len(stored) < 500
        assert sorted(p[0] for p in persons) == sorted(person_uuid(pid, s[0]) for s in stored)
        assert core.storage.execute("SELECT count(*) FROM events").rows[0][0] == calls[0]
        in_memory = {d for (p, d) in core.writer.identity.distinct_ids if p == pid}
        assert in_memory == {s[0] for s in stored}  # the failed unit's persons were dropped

        monkeypatch.setattr(duckdb_parts.PartsMixin, "write_import_part_files", real)
        again = bulk.import_files(core, [path], progress=False)
        assert again.loaded == len(rows) - calls[0] and again.duplicates == calls[0]
        assert core.storage.execute("SELECT count(DISTINCT person_id) FROM events").rows[0][0] == 500
        assert core.storage.execute("SELECT count(*) FROM persons").rows[0][0] == 500


def test_a_failure_in_the_writer_thread_leaves_store_and_memory_consistent(tmp_path, small_parts, monkeypatch):
    rows = _rows(1000)
    for i, r in enumerate(rows):
        r["distinct_id"] = f"user_{i // 2}"
    path = tmp_path / "events.parquet"
    _write(path, rows)
    real = bulk.resolve_persons
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(bulk, "resolve_persons", flaky)
    with sightline.open(tmp_path / "d") as core:
        with pytest.raises(Exception):
            bulk.import_files(core, [path], progress=False)
        pid = core.resolve_project(None).id
        stored = {r[0] for r in core.storage.execute("SELECT DISTINCT distinct_id FROM events").rows}
        persons = {r[0] for r in core.storage.execute("SELECT CAST(id AS VARCHAR) FROM persons").rows}
        assert persons == {person_uuid(pid, d) for d in stored}
        assert {d for (p, d) in core.writer.identity.distinct_ids if p == pid} == stored
        monkeypatch.setattr(bulk, "resolve_persons", real)
        bulk.import_files(core, [path], progress=False)
        assert core.storage.execute("SELECT count(*) FROM events").rows[0][0] == len(rows)
        assert core.storage.execute("SELECT count(*) FROM persons").rows[0][0] == 500


def test_storage_append_part_writes_one_file_per_month(tmp_path):
    """The storage interface's bulk append (``append_part``) on DuckDB: an Arrow batch across a
    month boundary becomes one registered part file per (project, month), and every row reads back."""
    from sightline.ingest.normalize import Event, uuid7
    from sightline.persons.identity import Changes
    from sightline.storage.schema import events_to_arrow

    with sightline.open(tmp_path / "data") as core:
        pid = core.resolve_project(None).id
        events = [Event(uuid=uuid7(), event="append_part_test", distinct_id=f"d{i}",
                        timestamp=T0 + timedelta(hours=20 * i), properties={"i": i},
                        properties_json=orjson.dumps({"i": i}).decode(), person_id=person_uuid(pid, f"d{i}"))
                  for i in range(6)]
        core.storage.append_part(events_to_arrow(events, [pid] * len(events), datetime.now(UTC)), Changes())
        parts = core.storage.part_files()
        assert sorted(p.month.strftime("%Y-%m") for p in parts) == ["2024-03", "2024-04"]
        assert sum(p.rows for p in parts) == len(events)
        stored = core.storage.execute(
            "SELECT CAST(uuid AS VARCHAR), CAST(person_id AS VARCHAR), properties FROM events "
            "WHERE event = 'append_part_test'").rows
        assert {u: (p, orjson.loads(props)["i"]) for u, p, props in stored} == \
            {e.uuid: (e.person_id, e.properties["i"]) for e in events}


def test_a_unit_that_cannot_be_registered_stops_the_import_and_leaves_no_stray_files(tmp_path, small_parts):
    """Units are registered by the writer thread while the part writer writes the next ones: when
    one registration fails, its files and those of every unit queued after it are deleted and not
    registered (their persons were never stored), the import reports the error, and importing the
    same file again stores everything once."""
    good = _rows(1000)
    path = tmp_path / "events.parquet"
    _write(path, good)
    with sightline.open(tmp_path / "d") as core:
        storage = core.storage
        real = storage.register_import_unit
        calls = []

        def flaky(added, changes=None, new_persons=None):
            calls.append(len(added))
            if len(calls) == 2:
                raise OSError("disk full (test)")
            return real(added, changes, new_persons)

        storage.register_import_unit = flaky
        with pytest.raises(Exception, match="disk full"):
            bulk.import_files(core, [path], progress=False)
        del storage.register_import_unit
        registered = {p.name for p in storage.part_files()}
        on_disk = {f.relative_to(storage.parts_dir).as_posix() for f in storage.parts_dir.rglob("*.parquet")}
        assert on_disk == registered
        assert {f.relative_to(storage.parts_dir).as_posix() for f in storage.parts_dir.rglob("*.actors")} == \
            {n + ".actors" for n in registered}
        first = storage.execute("SELECT count(*) FROM events").rows[0][0]
        assert 0 < first < len(good)
        # every stored event's person is stored
        assert storage.execute("SELECT count(*) FROM events e LEFT JOIN persons p ON p.id = e.person_id "
                               "WHERE p.id IS NULL").rows[0][0] == 0
        again = bulk.import_files(core, [path], progress=False)
        assert again.loaded == len(good) - first and again.duplicates == first
        assert storage.execute("SELECT count(*), count(DISTINCT uuid) FROM events").rows[0] == (len(good), len(good))
