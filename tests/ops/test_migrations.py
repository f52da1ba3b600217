"""Schema versions: a data directory with the first schema is backed up and upgraded by the
current `sightline serve`, keeping its data; data of a newer Sightline is refused."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import duckdb
import pytest

from livesrv import API_KEY, ROOT, TOKEN, start_server, stop_server
from sightline.ops import backup as backups
from sightline.ops import migrations

def _load_v1_layout():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("v1_layout", Path(__file__).with_name("v1_layout.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_v1_data_dir = _load_v1_layout().make_v1_data_dir

CURRENT = migrations.CURRENT_VERSION


def _meta_version(data) -> tuple[int, list]:
    con = sqlite3.connect(data / "meta.sqlite")
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        history = con.execute("SELECT version, note FROM schema_migrations ORDER BY version").fetchall()
    finally:
        con.close()
    return version, history


def _duck_version(data) -> int:
    con = duckdb.connect(str(data / "events.duckdb"), read_only=True)
    try:
        return con.execute("SELECT max(version) FROM sightline_schema").fetchone()[0]
    finally:
        con.close()


def _serve_fails(data) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "sightline.cli", "serve", "--data-dir", str(data), "--port", "1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode != 0
    return res


@pytest.mark.skipif(CURRENT < 2, reason="needs a schema newer than the first")
def test_serve_backs_up_and_upgrades_a_first_schema_data_dir(tmp_path):
    data = tmp_path / "data"
    written = make_v1_data_dir(data, token=TOKEN, api_key=API_KEY)
    assert migrations.read_versions(data) == migrations.Versions(1, 1)

    srv = start_server(data)
    try:
        # a backup of the old data was taken first
        taken = list((data / "backups").glob(f"pre-upgrade-v1-to-v{CURRENT}-*.tar"))
        assert len(taken) == 1
        manifest = backups.verify_archive(taken[0])
        assert manifest["schema_version"] == 1 and manifest["mode"] == "offline"
        assert manifest["counts"]["events.duckdb"]["events"] == len(written["uuids"])
        # the version is recorded (readable while the server holds the event store)
        version, history = _meta_version(data)
        assert version == CURRENT and history[-1][0] == CURRENT and "migrated" in history[-1][1]
        # and the data is intact, read through the API of the upgraded server
        assert sorted(e["uuid"] for e in srv.events()) == written["uuids"]
        persons = {p["distinct_ids"][0]: p["properties"].get("name") for p in srv.persons()}
        assert persons == written["person_names"]
        with srv.api() as c:
            flags = c.get("/api/projects/@current/feature_flags/").json()["results"]
            assert [f["key"] for f in flags] == ["old-flag"]
            cohorts = c.get("/api/projects/@current/cohorts/").json()["results"]
            assert [co["name"] for co in cohorts] == ["Old cohort"]
            project = c.get("/api/projects/@current/").json()
            assert project["name"] == "Old project" and project["query_timeout_seconds"] == 33
            q = c.post("/api/projects/@current/query/", json={"query": {
                "kind": "HogQLQuery", "query": "SELECT count() FROM events WHERE event = 'old_event'"}})
            assert q.json()["results"][0][0] == len(written["uuids"])
    finally:
        assert stop_server(srv) == 0
    assert _duck_version(data) == CURRENT

    # a second start has nothing to upgrade: no new backup
    srv = start_server(data)
    stop_server(srv)
    assert len(list((data / "backups").glob("pre-upgrade-*.tar"))) == 1

    # the pre-upgrade backup brings the first schema back (for an older Sightline)
    back = tmp_path / "back"
    backups.restore(taken[0], back)
    assert migrations.read_versions(back) == migrations.Versions(1, 1)


def test_newer_data_is_refused_with_both_versions(tmp_path):
    import sightline

    data = tmp_path / "data"
    with sightline.open(data) as s:
        s.capture("e", "u")
    assert _meta_version(data)[0] == CURRENT and _duck_version(data) == CURRENT

    con = sqlite3.connect(data / "meta.sqlite")
    con.execute(f"PRAGMA user_version = {CURRENT + 5}")
    con.close()
    res = _serve_fails(data)
    assert f"schema version {CURRENT + 5}" in res.stderr and f"schema version {CURRENT} at most" in res.stderr
    assert "Upgrade Sightline" in res.stderr and "Traceback" not in res.stderr
    assert not (data / "backups").exists() or not list((data / "backups").glob("*.tar"))  # nothing touched

    # an older metadata store over a newer event store: refused too, before any backup
    con = sqlite3.connect(data / "meta.sqlite")
    con.execute("PRAGMA user_version = 1")
    con.close()
    db = duckdb.connect(str(data / "events.duckdb"))
    db.execute("INSERT INTO sightline_schema VALUES (?)", [CURRENT + 1])
    db.close()
    res = _serve_fails(data)
    assert f"schema version {CURRENT + 1} (events.duckdb)" in res.stderr
    assert not list((data / "backups").glob("*.tar")) if (data / "backups").exists() else True


@pytest.mark.skipif(CURRENT < 2, reason="needs a schema newer than the first")
def test_read_only_use_of_old_data_asks_for_an_upgrade_and_upgrades_are_resumable(tmp_path):
    import sightline

    data = tmp_path / "data"
    make_v1_data_dir(data, token=TOKEN, api_key=API_KEY, hot_events=3, part_events=2)
    with pytest.raises(migrations.UpgradeNeeded, match="sightline serve"):
        sightline.open(data, read_only=True)
    # an upgrade interrupted after the event store's part: the next open finishes it
    db = duckdb.connect(str(data / "events.duckdb"))
    db.execute("INSERT INTO sightline_schema VALUES (?)", [CURRENT])
    db.close()
    with sightline.open(data) as s:
        assert s.upgrade is not None and s.upgrade.from_version == 1
        assert s.query({"kind": "HogQLQuery", "query": "SELECT count() FROM events"}).results[0][0] == 5
    assert _meta_version(data)[0] == CURRENT
    with sightline.open(data, read_only=True) as s:  # now current: read-only works
        assert s.upgrade is None
