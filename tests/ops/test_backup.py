"""Backups: `sightline backup` while the server runs and keeps acknowledging events, then
`sightline restore` into a new directory and a fresh server that serves the same data."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import uuid

import httpx
import pytest

from livesrv import ROOT, TOKEN, start_server, stop_server
from sightline.ops import backup as backups
from sightline.ops.migrations import CURRENT_VERSION


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sightline.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def _send(url: str, events: list[dict]) -> None:
    r = httpx.post(url + "/batch/", json={"api_key": TOKEN, "batch": events}, timeout=30)
    assert r.status_code == 200, r.text


def _state(server) -> dict:
    """Everything the test compares, read over the API."""
    events = server.events()
    with server.api() as c:
        flags = c.get("/api/projects/@current/feature_flags/").json()["results"]
        cohorts = c.get("/api/projects/@current/cohorts/").json()["results"]
        static = next(co for co in cohorts if co["name"] == "VIPs")
        vips = c.get(f"/api/projects/@current/cohorts/{static['id']}/persons/").json()["results"]
        project = c.get("/api/projects/@current/").json()
    return {
        "events": sorted((e["uuid"], e["event"], e["distinct_id"], json.dumps(e["properties"].get("n"))) for e in events),
        "persons": sorted((tuple(sorted(p["distinct_ids"])), json.dumps(p["properties"], sort_keys=True))
                          for p in server.persons()),
        "flags": sorted((f["key"], json.dumps(f["filters"], sort_keys=True), f["active"]) for f in flags),
        "cohorts": sorted((co["name"], co["is_static"]) for co in cohorts),
        "vips": sorted(d for p in vips for d in p["distinct_ids"]),
        "project": (project["name"], project["timezone"], project.get("query_timeout_seconds")),
    }


def test_backup_while_serving_then_restore_on_a_fresh_server(tmp_path):
    data = tmp_path / "data"
    srv = start_server(data)
    try:
        # events, persons (with an identify merge and properties), flags, cohorts, settings
        events = [{"event": "purchase", "distinct_id": f"user-{i % 7}", "uuid": str(uuid.uuid4()),
                   "properties": {"n": i, "$set": {"plan": "pro" if i % 2 else "free"}}} for i in range(60)]
        events.append({"event": "$identify", "distinct_id": "user-1", "uuid": str(uuid.uuid4()),
                       "properties": {"$anon_distinct_id": "anon-1", "n": -1}})
        _send(srv.url, events)
        with srv.api() as c:
            assert c.post("/api/projects/@current/feature_flags/", json={
                "key": "bk-flag", "filters": {"groups": [{"properties": [], "rollout_percentage": 30}]}}).status_code == 201
            assert c.post("/api/projects/@current/cohorts/", json={
                "name": "VIPs", "is_static": True, "distinct_ids": ["user-1", "user-2"]}).status_code == 201
            assert c.post("/api/projects/@current/cohorts/", json={
                "name": "Pro", "filters": {"properties": {"type": "AND", "values": [
                    {"key": "plan", "value": "pro", "type": "person"}]}}}).status_code == 201
            r = c.patch("/api/projects/@current/", json={"name": "Backed up", "timezone": "Europe/Paris",
                                                         "query_timeout_seconds": 42})
            assert r.status_code == 200, r.text
        before = _state(srv)
        assert len(before["events"]) == 61

        # events keep arriving (and are acknowledged) while the backup runs
        acked: list[str] = []
        stop = threading.Event()

        def keep_sending() -> None:
            i = 0
            while not stop.is_set():
                batch = [{"event": "during", "distinct_id": f"late-{i}", "uuid": str(uuid.uuid4()),
                          "properties": {"n": 1000 + i}}]
                _send(srv.url, batch)
                acked.extend(e["uuid"] for e in batch)
                i += 1

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            out = tmp_path / "snap.tar"
            res = _cli("backup", str(out), "--data-dir", str(data))
        finally:
            stop.set()
            sender.join(60)
        assert res.returncode == 0, res.stderr
        assert "Backed up to" in res.stdout and "live" in res.stdout
        assert acked, "the sender got no acknowledgement during the backup"
        live_uuids = {e["uuid"] for e in srv.events()}
        assert set(acked) <= live_uuids  # nothing acknowledged during the backup was lost

        manifest = backups.verify_archive(out)
        assert manifest["mode"] == "live" and manifest["format"] == "sightline-backup"
        with tarfile.open(out) as tar:
            names = tar.getnames()
        assert names[0] == "manifest.json" and "events.duckdb" in names and "meta.sqlite" in names
        in_snapshot = manifest["counts"]["events.duckdb"]["events"]
        assert 61 <= in_snapshot <= 61 + len(acked)
        assert manifest["counts"]["meta.sqlite"]["feature_flags"] == 1
        assert manifest["counts"]["meta.sqlite"]["cohorts"] == 2

        # restore refuses a directory a server runs on, and a non-empty one without --force
        res = _cli("restore", str(out), "--data-dir", str(data), "--force")
        assert res.returncode == 2 and "is running" in res.stderr
    finally:
        assert stop_server(srv) == 0
    res = _cli("restore", str(out), "--data-dir", str(data))
    assert res.returncode == 2 and "not empty" in res.stderr and "--force" in res.stderr

    restored = tmp_path / "restored"
    res = _cli("restore", str(out), "--data-dir", str(restored))
    assert res.returncode == 0, res.stderr
    assert f"{in_snapshot:,} events" in res.stdout
    srv2 = start_server(restored)
    try:
        after = _state(srv2)
        same = ("flags", "cohorts", "vips", "project")
        assert {k: after[k] for k in same} == {k: before[k] for k in same}
        # persons: the same, plus one per "during" event that made it into the snapshot
        late = [p for p in after["persons"] if p[0][0].startswith("late-")]
        assert [p for p in after["persons"] if p not in late] == before["persons"]
        assert len(late) == in_snapshot - 61
        # the events: everything from before the backup, plus some of those sent during it
        assert len(after["events"]) == in_snapshot
        assert set(before["events"]) <= set(after["events"])
        extra = {e[0] for e in after["events"]} - {e[0] for e in before["events"]}
        assert extra <= set(acked)
        # the restored server takes new events (a new ingestion log) and keeps them over a restart
        _send(srv2.url, [{"event": "after_restore", "distinct_id": "z", "properties": {}}])
        assert len(srv2.events(event="after_restore")) == 1
    finally:
        assert stop_server(srv2) == 0
    srv3 = start_server(restored)
    try:
        assert len(srv3.events()) == in_snapshot + 1
    finally:
        stop_server(srv3)

    # --force replaces the contents and keeps the old ones aside
    res = _cli("restore", str(out), "--data-dir", str(restored), "--force")
    assert res.returncode == 0, res.stderr
    aside = list((restored / "backups").glob("replaced-*"))
    assert len(aside) == 1 and (aside[0] / "events.duckdb").exists()


def test_offline_backup_and_damaged_or_foreign_archives(tmp_path):
    import sightline

    data = tmp_path / "d"
    with sightline.open(data) as s:
        for i in range(5):
            s.capture("offline", f"u{i}", {"i": i})
    out = tmp_path / "off.tar"
    res = _cli("backup", str(out), "--data-dir", str(data))
    assert res.returncode == 0, res.stderr
    manifest = backups.read_manifest(out)
    assert manifest["mode"] == "offline" and manifest["counts"]["events.duckdb"]["events"] == 5

    # a flipped byte in a stored file is caught before anything is restored
    raw = bytearray(out.read_bytes())
    with tarfile.open(out) as tar:
        info = tar.getmember("meta.sqlite")
    raw[info.offset_data + 100] ^= 0xFF
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(raw))
    with pytest.raises(backups.BackupError, match="checksum"):
        backups.restore(bad, tmp_path / "r1")
    assert not (tmp_path / "r1" / "meta.sqlite").exists()

    # a backup from a newer Sightline is refused, naming both versions
    newer = tmp_path / "newer.tar"
    manifest["schema_version"] = 99
    body = json.dumps(manifest).encode()
    with tarfile.open(out) as src, tarfile.open(newer, "w") as dst:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        import io

        dst.addfile(info, io.BytesIO(body))
        for member in src.getmembers()[1:]:
            dst.addfile(member, src.extractfile(member))
    res = _cli("restore", str(newer), "--data-dir", str(tmp_path / "r2"))
    assert res.returncode == 2 and "99" in res.stderr
    assert f"schema version {CURRENT_VERSION} at most" in res.stderr

    # a file that is not a backup
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"hello")
    res = _cli("restore", str(junk), "--data-dir", str(tmp_path / "r3"))
    assert res.returncode == 2 and "backup" in res.stderr

    # the good one restores and opens with the same events
    backups.restore(out, tmp_path / "r4")
    with sightline.open(tmp_path / "r4") as s:
        rows = s.query({"kind": "HogQLQuery", "query": "SELECT distinct_id FROM events ORDER BY 1"}).results
    assert [r[0] for r in rows] == [f"u{i}" for i in range(5)]
