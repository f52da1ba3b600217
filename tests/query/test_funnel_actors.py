"""The actors files beside the part files, and step 1's count of the funnel fast path read from
them: written with every part (import, compaction, rewrites), removed with it, backfilled for
older files; and the funnel gives the same numbers with them, without them and with the
general builder, whatever mix of covered files, partly covered files and hot rows it reads."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

import sightline
from sightline.ingest.bulk import import_events
from sightline.query import funnel_fast
from sightline.storage.duckdb_parts import ACTORS_SUFFIX

UTC = timezone.utc
T0 = datetime(2024, 3, 20, tzinfo=UTC)  # three weeks: March and April files


def _events(seed: int, n: int = 1500) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        d = rnd.randrange(60)
        ts = T0 + timedelta(minutes=rnd.randrange(21 * 24 * 60))
        event = rnd.choices(["$pageview", "signed_up", "purchase", "other"], [6, 2, 1, 1])[0]
        out.append({"event": event, "distinct_id": f"anon_{d}", "timestamp": ts.isoformat(), "properties": {"i": i}})
    # a third of the anonymous ids identify later: their earlier events move to the identified person
    for d in range(0, 60, 3):
        ts = T0 + timedelta(days=rnd.randrange(1, 20), minutes=rnd.randrange(600))
        out.append({"event": "$identify", "distinct_id": f"user_{d % 25}", "timestamp": ts.isoformat(),
                    "properties": {"$anon_distinct_id": f"anon_{d}"}})
    return out


def _store(tmp_path, seed: int):
    """A data dir with part files (imported) and hot rows (captured), merges in both."""
    events = _events(seed)
    rnd = random.Random(seed + 1)
    rnd.shuffle(events)
    cut = int(len(events) * 0.7)
    core = sightline.open(tmp_path / f"d{seed}")
    import_events(core, events[:cut], progress=False, batch_rows=400)
    core.ingest(events[cut:])
    core.sync()
    return core, events


def _funnel(date_from: str, date_to: str, steps=("$pageview", "signed_up", "purchase")) -> dict:
    return {"kind": "FunnelsQuery", "series": [{"event": e} for e in steps],
            "dateRange": {"date_from": date_from, "date_to": date_to},
            "funnelsFilter": {"funnelWindowInterval": 7, "funnelWindowIntervalUnit": "day"}}


def _spy(monkeypatch) -> list[dict]:
    """What each prepare step decided: the actors files and the part files it read."""
    seen: list[dict] = []
    original = funnel_fast.steps_plan

    def steps_plan(f):
        sql, prepare = original(f)
        if prepare is None:
            return sql, None

        def recorded(cur, text, params):
            out_sql, out_params = prepare(cur, text, params)
            seen.append({"actors": list(out_params.get("fa_actors", [])), "parts": list(out_params.get("fa_parts", [])),
                         "indexed": "fa_actors" in out_sql})
            return out_sql, out_params

        return sql, recorded

    monkeypatch.setattr(funnel_fast, "steps_plan", steps_plan)
    return seen


def _counts(core, q) -> list[int]:
    return [s["count"] for s in core.query(q).raw["results"]]


def _reference_step1(core, events, date_from: str, date_to: str) -> int:
    """Distinct persons (as the identity graph maps each distinct id now) with a $pageview in range."""
    start = datetime.fromisoformat(date_from).replace(tzinfo=UTC)
    end = datetime.fromisoformat(date_to).replace(tzinfo=UTC) + timedelta(days=1)
    person = dict(core.storage.execute("SELECT distinct_id, CAST(person_id AS VARCHAR) FROM person_distinct_ids").rows)
    return len({person[e["distinct_id"]] for e in events
                if e["event"] == "$pageview" and start <= datetime.fromisoformat(e["timestamp"]) < end})


@pytest.mark.parametrize("seed", [1, 2])
def test_step1_count_from_actors_files_matches_every_other_way(tmp_path, monkeypatch, seed):
    core, events = _store(tmp_path, seed)
    seen = _spy(monkeypatch)
    try:
        files = core.storage.part_files()
        assert len(files) >= 2 and all(f.actors for f in files)
        assert core.storage.execute("SELECT count(*) FROM events_hot").rows[0][0] > 0
        ranges = [("2024-03-01", "2024-04-30"),   # every file wholly inside
                  ("2024-03-25", "2024-04-30"),   # the March file(s) partly inside
                  ("2024-03-22", "2024-04-03"),   # both months partly
                  ("2024-03-20", "2024-03-31")]   # March only
        for date_from, date_to in ranges:
            q = _funnel(date_from, date_to)
            seen.clear()
            fast = _counts(core, q)
            monkeypatch.setattr(funnel_fast, "USE_ACTORS_FILES", False)
            plain = _counts(core, q)
            monkeypatch.setattr(funnel_fast, "ENABLED", False)
            general = _counts(core, q)
            monkeypatch.setattr(funnel_fast, "ENABLED", True)
            monkeypatch.setattr(funnel_fast, "USE_ACTORS_FILES", True)
            assert fast == plain == general, (date_from, date_to)
            assert fast[0] == _reference_step1(core, events, date_from, date_to) > 0
            assert seen and seen[0]["indexed"] == bool(seen[0]["actors"])
        # the first range read only actors files (and the hot rows); the second the April files'
        # actors and the March files' events; the third no actors file (no file wholly inside)
        seen.clear()
        _counts(core, _funnel(*ranges[0]))
        assert seen[0]["indexed"] and seen[0]["actors"] and not seen[0]["parts"]
        seen.clear()
        _counts(core, _funnel(*ranges[1]))
        assert seen[0]["indexed"] and all("month=2024-04" in a for a in seen[0]["actors"])
        assert seen[0]["parts"] and all("month=2024-03" in p for p in seen[0]["parts"])
        seen.clear()
        _counts(core, _funnel(*ranges[2]))
        assert not seen[0]["indexed"]
        # a step-1 filter: the actors files cannot answer, the count reads the events
        q = _funnel("2024-03-01", "2024-04-30")
        q["series"][0]["properties"] = [{"key": "i", "value": 100, "operator": "gt", "type": "event"}]
        seen.clear()
        fast = _counts(core, q)
        monkeypatch.setattr(funnel_fast, "ENABLED", False)
        assert fast == _counts(core, q)
        monkeypatch.setattr(funnel_fast, "ENABLED", True)
        assert not seen
        # a missing actors file (e.g. a restore of an old backup): that part is read instead
        victim = core.storage.parts_dir / (files[0].name + ACTORS_SUFFIX)
        victim.unlink()
        seen.clear()
        q = _funnel(*ranges[0])
        assert _counts(core, q) == _plain(core, q, monkeypatch)
        assert str(core.storage.parts_dir / files[0].name) in seen[0]["parts"]
    finally:
        core.close()


def _plain(core, q, monkeypatch) -> list[int]:
    monkeypatch.setattr(funnel_fast, "ENABLED", False)
    try:
        return _counts(core, q)
    finally:
        monkeypatch.setattr(funnel_fast, "ENABLED", True)


def test_actors_files_follow_their_parts(tmp_path):
    """Written with each part (the distinct project, event, person of its rows), replaced by
    compaction, deleted with their part, backfilled for parts without, kept by backups."""
    core, _ = _store(tmp_path, 3)
    st = core.storage
    try:
        def check_all() -> None:
            files = st.part_files()
            on_disk = {p.relative_to(st.parts_dir).as_posix() for p in st.parts_dir.rglob(f"*{ACTORS_SUFFIX}")}
            assert on_disk == {f.name + ACTORS_SUFFIX for f in files}
            for f in files:
                assert f.actors
                rows = pq.read_table(st.parts_dir / f.name, columns=["project_id", "event", "person_id"]).to_pylist()
                index = pq.read_table(st.parts_dir / (f.name + ACTORS_SUFFIX)).to_pylist()
                def key(r):
                    return r["project_id"], r["event"], str(r["person_id"])

                assert sorted(map(key, index)) == sorted({key(r) for r in rows})
                assert len(index) == len({key(r) for r in index})

        check_all()
        before = st.part_files()
        assert len(before) == 2  # one per month
        report = core.writer.run_exclusive(
            lambda _i: st.compact_parts(settled_before=datetime.now(UTC) + timedelta(hours=1)))
        assert report.files_removed >= 2 and report.hot_rows_moved > 0
        check_all()
        assert not {f.name for f in before} & {f.name for f in st.part_files()}
        # a part from before the actors files: none on disk, not marked; compaction writes it
        [first, *_] = st.part_files()
        (st.parts_dir / (first.name + ACTORS_SUFFIX)).unlink()
        st._con.execute("UPDATE event_part_layout SET actors = NULL WHERE name = ?", [first.name])
        assert not next(f for f in st.part_files() if f.name == first.name).actors
        report = core.writer.run_exclusive(lambda _i: st.compact_parts(hot=False))
        assert report.files_indexed == 1 and report.to_json()["files_indexed"] == 1
        check_all()
        # deleting a person's events rewrites their files: the new files get theirs, the old go
        names = {f.name for f in st.part_files()}
        person = st.execute("SELECT CAST(person_id AS VARCHAR) FROM events LIMIT 1").rows[0][0]
        core.writer.run_exclusive(lambda _i: st.rewrite_parts("CAST(person_id AS VARCHAR) = ?", [person]))
        assert {f.name for f in st.part_files()} != names
        check_all()
    finally:
        core.close()
    # an actors file nobody registered (a crash between write and commit) goes at the next open
    stray = st.parts_dir / "project=1" / "month=2024-03" / ("part-x.parquet" + ACTORS_SUFFIX)
    stray.write_bytes(b"PAR1")
    core = sightline.open(tmp_path / "d3")
    try:
        assert not stray.exists()
        q = _funnel("2024-03-01", "2024-04-30")
        expected = _counts(core, q)
        names = {f.name for f in core.storage.part_files()}
    finally:
        core.close()
    # backups carry them; the restored store reads them (and answers the same)
    from sightline.ops import backup as backups

    out = tmp_path / "b.tar"
    backups.backup_offline(tmp_path / "d3", out)
    stored = set(backups.read_manifest(out)["files"])
    assert {f"parts/{n}{ACTORS_SUFFIX}" for n in names} <= stored and {f"parts/{n}" for n in names} <= stored
    backups.restore(out, tmp_path / "r")
    core = sightline.open(tmp_path / "r")
    try:
        assert all((core.storage.parts_dir / (n + ACTORS_SUFFIX)).exists() for n in names)
        assert _counts(core, q) == expected
    finally:
        core.close()
