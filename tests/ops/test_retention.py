"""Retention: the time-partitioned layout, `sightline prune` (through the server and on a stopped
data directory), `POST .../prune/`, the `retention_days` setting and the server's daily job.

Every count is checked against a plain-Python count of the events the test wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pyarrow.parquet as pq
from livesrv import API_KEY, ROOT, TOKEN, start_server, stop_server

NOW = datetime.now(UTC)
DAYS = 200  # retention used by the tests


def cutoff_for(days: int) -> datetime:
    return (datetime.now(UTC) - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


def make_events(n: int, *, prefix: str = "", max_age_days: int = 420) -> list[dict]:
    """Events spread over ``max_age_days``, none within three days of the retention cutoff (so
    a test that runs across midnight counts the same)."""
    out = []
    for i in range(n):
        age = (i * 37) % max_age_days + (i % 24) / 24
        if DAYS - 3 <= age <= DAYS + 3:
            age += 7
        out.append({"event": ("$pageview", "signed_up", "purchase")[i % 3], "distinct_id": f"{prefix}u{i % 97}",
                    "uuid": None, "timestamp": (NOW - timedelta(days=age)).isoformat(),
                    "properties": {"i": i, "$current_url": f"https://x.test/{i % 13}"}})
    return out


def older(events: list[dict], cutoff: datetime) -> int:
    return sum(1 for e in events if datetime.fromisoformat(e["timestamp"]) < cutoff)


def write_jsonl(path: Path, events: list[dict]) -> Path:
    with open(path, "w") as fh:
        fh.writelines(json.dumps({k: v for k, v in e.items() if v is not None}) + "\n" for e in events)
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sightline.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120, check=False)


def sql(client: httpx.Client, statement: str) -> list:
    r = client.post("/api/projects/@current/query/", json={"query": {"kind": "HogQLQuery", "query": statement}})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def part_files(data: Path) -> list[Path]:
    return sorted((data / "parts").rglob("*.parquet"))


def dir_bytes(data: Path) -> int:
    files = list((data / "parts").rglob("*")) + list(data.glob("events.duckdb*"))
    return sum(f.stat().st_size for f in files if f.is_file())


def capture(url: str, events: list[dict]) -> None:
    batch = [{"event": e["event"], "distinct_id": e["distinct_id"], "timestamp": e["timestamp"],
              "properties": e["properties"]} for e in events]
    r = httpx.post(url + "/batch/", json={"api_key": TOKEN, "batch": batch}, timeout=30)
    assert r.status_code == 200, r.text


def test_prune_through_the_server_dry_run_then_real(tmp_path):
    data = tmp_path / "data"
    imported = make_events(6000)
    out = cli("import", str(write_jsonl(tmp_path / "old.jsonl", imported)), "--data-dir", str(data),
              "--no-progress", env={"SIGHTLINE_PROJECT_TOKEN": TOKEN, "SIGHTLINE_API_KEY": API_KEY})
    assert out.returncode == 0, out.stderr
    # the import lands in partitions: one directory per (project, UTC month), each file in its month
    files = part_files(data)
    months = {f.parent.name for f in files}
    assert len(months) >= 13 and all(f.parent.parent.name == "project=1" for f in files)
    for f in files:
        ts = pq.read_table(f, columns=["timestamp"]).column("timestamp").to_pylist()
        assert {t.strftime("month=%Y-%m") for t in ts} == {f.parent.name}

    srv = start_server(data, extra_env={"SIGHTLINE_RETENTION_INTERVAL": "off"})
    try:
        hot = make_events(300, prefix="h", max_age_days=400)  # old timestamps through the capture API
        capture(srv.url, hot)
        everything = imported + hot
        cutoff = cutoff_for(DAYS)
        expected = older(everything, cutoff)
        assert 0 < expected < len(everything)
        with srv.api() as c:
            # the setting: validated, then stored
            for bad in (0, 3651, "30", 1.5, True):
                r = c.patch("/api/projects/@current/", json={"retention_days": bad})
                assert r.status_code == 400 and r.json()["attr"] == "retention_days", (bad, r.text)
            r = c.post("/api/projects/@current/prune/?dry_run=true")
            assert r.status_code == 400 and r.json()["code"] == "no_retention"
            r = c.patch("/api/projects/@current/", json={"retention_days": DAYS})
            assert r.status_code == 200 and r.json()["retention_days"] == DAYS
            # bad requests
            assert c.post("/api/projects/@current/prune/?dry_run=maybe").status_code == 400
            r = c.post("/api/projects/@current/prune/", params={"before": "yesterday-ish", "dry_run": "true"})
            assert r.status_code == 400 and r.json()["attr"] == "before"
            assert c.post("/api/projects/@current/prune/", json={"nope": 1}).status_code == 400
            assert httpx.post(srv.url + "/api/projects/@current/prune/").status_code == 401
            assert c.post("/api/projects/99/prune/?dry_run=true").status_code == 404

            # dry run over HTTP: counts, nothing deleted
            r = c.post("/api/projects/@current/prune/?dry_run=true")
            assert r.status_code == 200, r.text
            dry = r.json()
            assert dry["dry_run"] and dry["events"] == expected
            assert dry["hot_events"] == older(hot, cutoff) and dry["part_events"] == older(imported, cutoff)
            assert dry["before"] == cutoff.isoformat().replace("+00:00", "Z")
            assert dry["files_deleted"] > 0 and dry["files_rewritten"] >= 1 and dry["part_bytes"] > 0
            assert sql(c, "SELECT count() FROM events") == [[len(everything)]]
        assert len(part_files(data)) == len(files)

        # the CLI reaches the running server: dry run, then the real thing
        out = cli("prune", "--data-dir", str(data), "--dry-run", "--json")
        assert out.returncode == 0, out.stderr
        assert {k: v for k, v in json.loads(out.stdout).items() if "bytes" not in k} == \
            {k: v for k, v in dry.items() if "bytes" not in k}
        parts_before = sum(f.stat().st_size for f in part_files(data))
        out = cli("prune", "--data-dir", str(data), "--json")
        assert out.returncode == 0, out.stderr
        real = json.loads(out.stdout)
        assert not real["dry_run"] and real["events"] == expected
        assert real["files_deleted"] == dry["files_deleted"] and real["files_rewritten"] == dry["files_rewritten"]
        assert real["bytes_freed"] > 0 and real["disk_bytes_after"] < real["disk_bytes_before"]

        with srv.api() as c:
            [[n, oldest]] = sql(c, "SELECT count(), min(timestamp) FROM events")
            assert n == len(everything) - expected
            assert datetime.fromisoformat(oldest) >= cutoff
            # per event too (the query API reads the same view)
            by_event = dict(sql(c, "SELECT event, count() FROM events GROUP BY event"))
            for name in ("$pageview", "signed_up", "purchase"):
                assert by_event[name] == sum(1 for e in everything if e["event"] == name and
                                             datetime.fromisoformat(e["timestamp"]) >= cutoff)
            # a second run finds nothing left to delete
            again = c.post("/api/projects/@current/prune/").json()
            assert again["events"] == 0 and again["files_deleted"] == 0
    finally:
        assert stop_server(srv) == 0

    # the files: no partition of a month wholly before the cutoff is left, none holds old rows
    remaining = part_files(data)
    assert remaining and all(f.parent.name >= cutoff.strftime("month=%Y-%m") for f in remaining)
    for f in remaining:
        assert min(pq.read_table(f, columns=["timestamp"]).column("timestamp").to_pylist()) >= cutoff
    assert not [p for p in (data / "parts").rglob("*") if p.is_dir() and not any(p.iterdir())]
    # space came back: the Parquet data shrank, and the whole store (checkpointed at stop) is
    # smaller than it was (checkpointed) before the prune
    assert sum(f.stat().st_size for f in remaining) < parts_before
    assert dir_bytes(data) < real["disk_bytes_before"]
    con = duckdb.connect(str(data / "events.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM events_hot WHERE timestamp < ?", [cutoff]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == len(everything) - expected
        registered = {r[0] for r in con.execute("SELECT name FROM event_parts").fetchall()}
    finally:
        con.close()
    assert registered == {f.relative_to(data / "parts").as_posix() for f in remaining}


def test_the_server_applies_retention_by_itself(tmp_path):
    data = tmp_path / "data"
    srv = start_server(data, extra_env={"SIGHTLINE_RETENTION_INTERVAL": "0.5"})
    try:
        events = make_events(900, max_age_days=400)
        capture(srv.url, events)
        with srv.api() as c:
            assert sql(c, "SELECT count() FROM events") == [[900]]
            r = c.patch("/api/projects/@current/", json={"retention_days": DAYS})
            assert r.status_code == 200
            expected = len(events) - older(events, cutoff_for(DAYS))
            deadline = time.monotonic() + 60
            while sql(c, "SELECT count() FROM events") != [[expected]]:
                assert time.monotonic() < deadline, "the retention job did not run"
                time.sleep(0.3)
            # null keeps everything from now on: new old events stay
            assert c.patch("/api/projects/@current/", json={"retention_days": None}).json()["retention_days"] is None
            capture(srv.url, make_events(30, prefix="z", max_age_days=400))
            time.sleep(1.5)  # a few runs of the job
            assert sql(c, "SELECT count() FROM events") == [[expected + 30]]
    finally:
        assert stop_server(srv) == 0


def test_compaction_moves_settled_hot_rows_and_merges_small_files(tmp_path):
    import sightline
    from sightline.ingest.bulk import import_events

    data = tmp_path / "d"
    old = [{"event": "e", "distinct_id": f"d{i % 7}", "timestamp": (NOW - timedelta(days=40, hours=i % 48)).isoformat(),
            "properties": {"i": i}} for i in range(500)]
    with sightline.open(data) as core:
        st = core.storage
        core.ingest(old)                                # hot rows, old timestamps
        # an import's batches are merged into one file per partition at its end
        import_events(core, [{"event": "b", "distinct_id": "x", "timestamp": (NOW - timedelta(days=40)).isoformat(),
                              "properties": {"k": k}} for k in range(10)], progress=False, batch_rows=1)
        assert len(st.part_files()) == 1
        hot = lambda: st.execute("SELECT count(*) FROM events_hot").rows[0][0]
        total = lambda: st.execute("SELECT count(*), count(DISTINCT uuid) FROM events").rows[0]
        assert hot() == 500 and total() == (510, 510)
        # not settled yet (ingested just now): the daily default leaves them hot
        report = core.writer.run_exclusive(lambda _i: st.compact_parts(merge=False))
        assert report.hot_rows_moved == 0 and hot() == 500
        report = core.writer.run_exclusive(lambda _i: st.compact_parts(settled_before=NOW + timedelta(hours=1)))
        assert report.hot_rows_moved == 500 and hot() == 0 and total() == (510, 510)
        files = st.part_files()
        per_partition: dict[str, int] = {}
        for f in files:
            per_partition[str(Path(f.name).parent)] = per_partition.get(str(Path(f.name).parent), 0) + 1
        assert set(per_partition.values()) == {1}     # the small files were merged
        assert {f.month.strftime("month=%Y-%m") for f in files} == \
            {(NOW - timedelta(days=40, hours=h)).strftime("month=%Y-%m") for h in range(48)}
        assert {f.relative_to(data / "parts").as_posix() for f in part_files(data)} == {f.name for f in files}
        # files are sorted by (event, person_id, timestamp) inside
        for f in files:
            t = pq.read_table(data / "parts" / f.name, columns=["event", "person_id", "timestamp"]).to_pylist()
            assert t == sorted(t, key=lambda r: (r["event"], r["person_id"], r["timestamp"]))


def test_compaction_resorts_files_of_the_older_row_order(tmp_path):
    """Files written before the (event, person_id, timestamp) order (sort_order NULL) are
    rewritten by the next compaction, even alone in their partition; rows and results stay."""
    import sightline
    from sightline.ingest.bulk import import_events
    from sightline.storage.duckdb_parts import PART_ORDER

    data = tmp_path / "d"
    events = [{"event": ("a", "b")[i % 2], "distinct_id": f"d{i % 11}",
               "timestamp": (NOW - timedelta(days=40, minutes=i)).isoformat(), "properties": {"i": i}}
              for i in range(300)]
    with sightline.open(data) as core:
        st = core.storage
        import_events(core, events, progress=False)
        [f] = st.part_files()
        assert f.sort_order == PART_ORDER
        path = data / "parts" / f.name
        # make it a file of the old order: rows by (event, timestamp), its order unrecorded
        st.execute(f"COPY (SELECT * FROM read_parquet('{path}') ORDER BY event, timestamp) TO '{path}.old' "
                   "(FORMAT parquet)")
        os.replace(f"{path}.old", path)
        st._con.execute("UPDATE event_part_layout SET sort_order = NULL")
        [old] = st.part_files()
        assert old.sort_order is None
        before = st.execute("SELECT event, count(*), count(DISTINCT person_id), min(timestamp), max(timestamp) "
                            "FROM events GROUP BY ALL ORDER BY ALL").rows
        report = core.writer.run_exclusive(lambda _i: st.compact_parts(hot=False))
        assert report.files_removed == 1 and report.files_written == 1
        [new] = st.part_files()
        assert new.name != old.name and new.sort_order == PART_ORDER and new.rows == 300
        t = pq.read_table(data / "parts" / new.name, columns=["event", "person_id", "timestamp"]).to_pylist()
        assert t == sorted(t, key=lambda r: (r["event"], r["person_id"], r["timestamp"]))
        assert st.execute("SELECT event, count(*), count(DISTINCT person_id), min(timestamp), max(timestamp) "
                          "FROM events GROUP BY ALL ORDER BY ALL").rows == before
        # a file of the current order alone in its partition stays as it is
        core.writer.run_exclusive(lambda _i: st.compact_parts(hot=False))
        assert [f.name for f in st.part_files()] == [new.name]


def test_prune_on_a_stopped_data_dir_and_orphans_are_removed(tmp_path):
    import sightline
    from sightline.ingest.bulk import import_events

    data = tmp_path / "d"
    events = make_events(2000)
    with sightline.open(data) as core:
        import_events(core, events, progress=False, batch_rows=700)
    # a crash between writing a file and registering it leaves an orphan: gone on the next open
    orphan = next(iter(part_files(data))).with_name("part-orphan.parquet")
    orphan.write_bytes(b"PAR1 not registered")
    (data / "parts" / "project=1" / "month=1999-01").mkdir()
    before = "-" + str(DAYS) + "d"
    out = cli("prune", "--data-dir", str(data), "--before", before, "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    dry = json.loads(out.stdout)
    cutoff = datetime.fromisoformat(dry["before"])
    assert abs((cutoff - (datetime.now(UTC) - timedelta(days=DAYS))).total_seconds()) < 120
    assert dry["events"] == older(events, cutoff) and not orphan.exists()
    assert not (data / "parts" / "project=1" / "month=1999-01").exists()
    out = cli("prune", "--data-dir", str(data), "--before", dry["before"])
    assert out.returncode == 0, out.stderr
    assert f"Deleted {older(events, cutoff):,} events" in out.stdout
    with sightline.open(data, read_only=True) as core:
        assert core.storage.execute("SELECT count(*) FROM events").rows[0][0] == len(events) - older(events, cutoff)
    bad = cli("prune", "--data-dir", str(data), "--before", "soon")
    assert bad.returncode == 2 and "--before" in bad.stderr
