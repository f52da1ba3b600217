"""The bulk import's fast path against the capture path's per-event rules.

The same generated events (identity events, ``$set``/``$set_once``/``$unset`` conflicts with
out-of-order timestamps, groups old and new, personless events, duplicate uuids, bad rows, a
store that already holds persons and some of the events) go

* through ``Sightline.ingest`` (the capture path: ``IdentityState.process_batch``, one event
  after the other), in the import's documented order (chunk by chunk, each chunk in timestamp
  order, ties in file order), and
* through ``sightline import`` of a Parquet file (dictionary-encoded properties or not) and of a
  JSON-lines file,

and every stored column of every event, person, distinct id, override, merge, group, group
type and ingestion warning must come out the same.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sightline
from sightline.ingest import bulk
from sightline.storage.schema import DERIVED_COLUMNS, GROUP_COLUMNS

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _generate(seed: int, n: int) -> list[dict]:
    """Valid events, in no particular time order (timestamps collide now and then)."""
    rng = random.Random(seed)
    anon = [f"anon_{i}" for i in range(14)]
    users = [f"user_{i}" for i in range(9)]
    out = []
    for i in range(n):
        did = rng.choice(anon + users)
        props: dict = {"$browser": rng.choice(["Chrome", "Safari", "Firefox"]),
                       "$current_url": f"https://app.test/p{i % 7}", "i": i}
        event = rng.choice(["$pageview", "$pageview", "signed_up", "purchase"])
        kind = rng.random()
        if kind < 0.08:
            event, did = "$identify", rng.choice(users)
            props["$anon_distinct_id"] = rng.choice(anon + users[:2])
            props["$set"] = {"email": f"{did}@x.test", "plan": rng.choice(["free", "pro"])}
        elif kind < 0.11:
            event, props["alias"] = "$create_alias", rng.choice(anon + users)
        elif kind < 0.13:
            event, props["alias"] = "$merge_dangerously", rng.choice(users + anon[:3])
        elif kind < 0.24:
            props["$set"] = {"plan": rng.choice(["free", "pro", "team"]), "n": i}
        elif kind < 0.29:
            props["$set_once"] = {"first_seen": i, "plan": "trial"}
        elif kind < 0.32:
            props["$unset"] = ["plan"]
        elif kind < 0.42:
            props["$groups"] = {"company": rng.choice(["acme", "globex", 7])}
        elif kind < 0.44:
            props["$groups"] = {"project": f"p{i % 3}", "company": "acme"}
        elif kind < 0.46:
            event = "$groupidentify"
            props.update({"$group_type": "company", "$group_key": "acme", "$group_set": {"size": i}})
        elif kind < 0.48:
            props["$process_person_profile"] = False
        ts = T0 + timedelta(minutes=rng.randrange(0, 900))
        out.append({"event": event, "distinct_id": did, "timestamp": ts, "properties": props,
                    "uuid": _uuid(rng)})
    return out


def _file_rows(events: list[dict], seed: int) -> tuple[list[dict], list[bool]]:
    """The file: the events plus exact duplicates and bad rows at random places; and which of
    the file's rows the import must store (valid and first of their uuid)."""
    rng = random.Random(seed + 1)
    rows = [dict(e, properties=json.dumps(e["properties"])) for e in events]
    for _ in range(12):  # duplicates, later in the file
        j = rng.randrange(len(rows))
        rows.insert(rng.randrange(j, len(rows)) + 1, dict(rows[j]))
    bad = [{"event": "  ", "properties": "{}"}, {"distinct_id": "", "properties": "{}"},
           {"uuid": "nope", "properties": "{}"}, {"properties": "[1, 2]"}, {"properties": "{broken"},
           {"properties": '{"$set": {"plan": "x"'}]
    for b in bad:
        base = dict(rng.choice(events), uuid=_uuid(rng))
        rows.insert(rng.randrange(len(rows)), {**base, "properties": json.dumps(base["properties"]), **b})
    keep, seen = [], set()
    for r in rows:
        ok = (r["event"].strip() and r["distinct_id"].strip() and r["uuid"] != "nope"
              and r["properties"].startswith("{") and _json_ok(r["properties"]))
        keep.append(bool(ok) and r["uuid"] not in seen)
        if ok:
            seen.add(r["uuid"])
    return rows, keep


def _json_ok(text: str) -> bool:
    try:
        orjson.loads(text)
        return True
    except orjson.JSONDecodeError:
        return False


def _raw(row: dict) -> dict:
    """A file row as a PostHog-shaped event (properties that do not parse stay text)."""
    props = row["properties"]
    return {"event": row["event"], "distinct_id": row["distinct_id"], "uuid": row["uuid"],
            "timestamp": row["timestamp"].isoformat(), "properties": orjson.loads(props) if _json_ok(props) else props}


def _prime(core, events: list[dict]) -> None:
    """A store that already has persons (one identified, with a newer ``plan``) and a few of
    the file's events."""
    core.ingest([{"event": "$identify", "distinct_id": "user_0", "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "a")),
                  "timestamp": (T0 + timedelta(days=10)).isoformat(),
                  "properties": {"$anon_distinct_id": "anon_0", "$set": {"plan": "enterprise"}}},
                 {"event": "$pageview", "distinct_id": "user_5", "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "b")),
                  "timestamp": (T0 + timedelta(hours=20)).isoformat(), "properties": {}}])
    core.ingest([_raw(dict(e, properties=json.dumps(e["properties"]))) for e in events[:5]])


def _reference(path: Path, rows: list[dict], keep: list[bool], batch_rows: int, events: list[dict],
               chunk_rows: int, unit_rows: int) -> None:
    """The capture path, chunk by chunk (the rows the import resolves together: whole batches
    of the file until ``chunk_rows`` new rows, or the end of a unit of ``unit_rows``), each in
    timestamp order (ties in file order)."""
    primed = {e["uuid"] for e in events[:5]}
    with sightline.open(path) as core:
        _prime(core, events)
        chunk: list = []
        in_unit = 0  # rows of the current unit already resolved

        def flush() -> None:
            chunk.sort(key=lambda x: (x[0], x[1]))
            if chunk:
                core.ingest([_raw(r) for _, _, r in chunk])
            chunk.clear()

        for start in range(0, len(rows), batch_rows):
            chunk += [(r["timestamp"], start + i, r) for i, r in enumerate(rows[start:start + batch_rows])
                      if keep[start + i] and r["uuid"] not in primed]
            if len(chunk) >= chunk_rows:
                in_unit += len(chunk)
                flush()
            if in_unit + len(chunk) >= unit_rows:
                flush()
                in_unit = 0
        flush()


def _write_parquet(path: Path, rows: list[dict], dictionary: bool) -> None:
    schema = pa.schema([("event", pa.string()), ("distinct_id", pa.string()),
                        ("timestamp", pa.timestamp("us", tz="UTC")), ("properties", pa.string()),
                        ("uuid", pa.string())])
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    pq.write_table(table, path, use_dictionary=["properties"] if dictionary else False)


def _snapshot(path: Path) -> dict:
    with sightline.open(path) as core:
        q = lambda sql: core.storage.execute(sql).rows  # noqa: E731
        derived = ", ".join(DERIVED_COLUMNS.values())
        groups = ", ".join(GROUP_COLUMNS)
        events = [(*r[:6], orjson.loads(r[6]), *r[7:]) for r in q(
            f"SELECT CAST(uuid AS VARCHAR), project_id, event, distinct_id, CAST(person_id AS VARCHAR), "
            f"timestamp, properties, {groups}, {derived} FROM events ORDER BY 1")]
        persons = [(r[0], r[1], r[2], orjson.loads(r[3]), orjson.loads(r[4]), r[5], r[6]) for r in q(
            "SELECT CAST(id AS VARCHAR), project_id, created_at, properties, properties_meta, is_identified, "
            "version FROM persons ORDER BY 1")]
        return {
            "events": events,
            "persons": persons,
            "distinct_ids": q("SELECT project_id, distinct_id, CAST(person_id AS VARCHAR) FROM person_distinct_ids "
                              "ORDER BY 1, 2"),
            "overrides": q("SELECT project_id, CAST(old_person_id AS VARCHAR), CAST(override_person_id AS VARCHAR) "
                           "FROM person_overrides ORDER BY 1, 2"),
            "merges": [(*r[:4], orjson.loads(r[4]), orjson.loads(r[5]), *r[6:]) for r in q(
                "SELECT project_id, merged_at, CAST(source_person_id AS VARCHAR), CAST(target_person_id AS VARCHAR), "
                "source_distinct_ids, source_properties, source_is_identified, source_created_at, reason "
                "FROM person_merges ORDER BY id")],
            "groups": [(*r[:4], orjson.loads(r[4]), orjson.loads(r[5]), r[6]) for r in q(
                "SELECT project_id, group_type_index, group_key, created_at, properties, properties_meta, version "
                "FROM groups ORDER BY 1, 2, 3")],
            "group_types": q("SELECT * FROM group_types ORDER BY 1, 3"),
            "warnings": sorted((r[0], r[1], orjson.dumps(orjson.loads(r[2]), option=orjson.OPT_SORT_KEYS), r[3])
                               for r in q("SELECT project_id, type, details, timestamp FROM ingestion_warnings")),
        }


def _assert_same(got: dict, want: dict) -> None:
    assert len(want["events"]) > 300 and len(want["persons"]) >= 3 and want["merges"] and want["warnings"]
    assert want["groups"] and len(want["group_types"]) == 2 and any(e[7] for e in want["events"])
    for key in want:
        assert got[key] == want[key], key


@pytest.mark.parametrize("batch_rows,fmt", [(100_000, "parquet-dict"), (37, "parquet"), (53, "parquet-dict"),
                                            (100_000, "jsonl"), (160, "jsonl")])
def test_import_stores_what_the_capture_path_stores(tmp_path, monkeypatch, batch_rows, fmt):
    events = _generate(seed=batch_rows, n=420)
    rows, keep = _file_rows(events, seed=batch_rows)
    ref = tmp_path / "ref"
    _reference(ref, rows, keep, batch_rows if fmt != "jsonl" else (batch_rows // 5), events, chunk_rows=70,
               unit_rows=150)

    real = bulk.read_batches
    monkeypatch.setattr(bulk, "read_batches", lambda path, fmt="auto", batch_rows_=batch_rows:
                        real(path, fmt, batch_rows=batch_rows_))
    monkeypatch.setattr(bulk, "PART_ROWS", 150)  # several units, dedup across units not stored yet
    monkeypatch.setattr(bulk, "RESOLVE_ROWS", 70)  # resolved in chunks of at least 70 rows
    if fmt == "jsonl":
        path = tmp_path / "events.jsonl"
        path.write_text("".join(json.dumps(_raw(r)) + "\n" for r in rows))
    else:
        path = tmp_path / "events.parquet"
        _write_parquet(path, rows, dictionary=fmt == "parquet-dict")
        if fmt == "parquet-dict":  # the fast path's precondition
            assert bulk._dictionary_columns(pq.ParquetFile(path)) == ["properties"]
    imported = tmp_path / "imp"
    with sightline.open(imported) as core:
        _prime(core, events)
        summary = bulk.import_files(core, [path], progress=False)
    assert summary.loaded == sum(keep) - 5  # the primed five are already stored
    assert summary.duplicates == len(rows) - summary.rejected_total - summary.loaded
    assert summary.rejected_total == 6

    _assert_same(_snapshot(imported), _snapshot(ref))
