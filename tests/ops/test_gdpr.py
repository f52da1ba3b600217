"""GDPR deletion: `DELETE .../persons/<id>/?delete_events=true` and `sightline persons delete`.

The proof is on disk: a marker string that only the deleted person's events and properties
contain is findable in the data directory's files before the deletion and nowhere after it
(the DuckDB file and its log, the Parquet parts, the ingestion log, the metadata store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from livesrv import start_server, stop_server

MARKER = "ZqGdprMarker7731"  # only the victim's data contains it


def files_containing(data_dir: Path, needle: str) -> list[str]:
    out = []
    for root, _, files in os.walk(data_dir):
        for name in files:
            path = Path(root) / name
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if needle.encode() in data:
                out.append(str(path.relative_to(data_dir)))
    return out


def victim_events(prefix: str, day: str) -> list[dict]:
    """The victim: an anonymous device merged into a signed-in id, a marker in properties,
    in $set and in a distinct id; plus another person's events that must survive."""
    anon, user = f"{prefix}-anon-{MARKER}", f"{prefix}-victim@example.com"
    return [
        {"event": "$pageview", "distinct_id": anon, "timestamp": f"{day}T10:00:00Z",
         "properties": {"$current_url": f"https://x.test/{MARKER}"}, "$set": {"secret": MARKER}},
        {"event": "signed_up", "distinct_id": user, "timestamp": f"{day}T10:01:00Z",
         "$set": {"email": user, "note": MARKER}},
        {"event": "$identify", "distinct_id": user, "timestamp": f"{day}T10:02:00Z",
         "properties": {"$anon_distinct_id": anon}},
        {"event": "purchase", "distinct_id": anon, "timestamp": f"{day}T10:03:00Z",
         "properties": {"comment": MARKER}},
        {"event": "$pageview", "distinct_id": f"{prefix}-bystander", "timestamp": f"{day}T10:04:00Z",
         "properties": {"$current_url": "https://x.test/ok"}, "$set": {"plan": "free"}},
        {"event": "purchase", "distinct_id": f"{prefix}-bystander", "timestamp": f"{day}T10:05:00Z"},
    ]


def test_delete_person_with_events_over_http_removes_every_byte(tmp_path):
    data = tmp_path / "data"
    # history imported as Parquet parts (server stopped), then live events through capture
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(json.dumps(e) for e in victim_events("old", "2025-03-01")))
    r = CliRunner().invoke(__import__("sightline.cli", fromlist=["main"]).main,
                           ["import", str(history), "--data-dir", str(data), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert list((data / "parts").rglob("*.parquet")), "the import should have written parts"
    srv = start_server(data)
    try:
        live = victim_events("old", "2025-03-02")  # same persons, more events, in the hot table
        assert httpx.post(srv.url + "/batch/", json={"api_key": srv.token, "batch": live}).status_code == 200
        victim = srv.persons(distinct_id="old-victim@example.com")
        assert len(victim) == 1 and sorted(victim[0]["distinct_ids"]) == sorted(
            ["old-victim@example.com", f"old-anon-{MARKER}"])
        # (the read-back API lists the events of the distinct id's person: both ids, both days)
        assert len(srv.events(distinct_id="old-victim@example.com")) == 8
        assert files_containing(data, MARKER), "the marker must be on disk before the deletion"

        with srv.api() as c:
            assert c.delete(f"/api/projects/@current/persons/{victim[0]['id']}/",
                            params={"delete_events": "maybe"}).status_code == 400
            assert c.delete("/api/projects/@current/persons/not-a-uuid/").status_code == 404
            assert httpx.delete(srv.url + f"/api/projects/@current/persons/{victim[0]['id']}/",
                                headers={"Authorization": f"Bearer {srv.token}"}).status_code == 401
            r = c.delete(f"/api/projects/@current/persons/{victim[0]['id']}/", params={"delete_events": "true"})
            assert r.status_code == 200, r.text
            body = r.json()
            # 4 victim events per copy (2 imported + 2 live copies), 2 distinct ids, 1 merge
            assert body["counts"]["events"] == 8
            assert body["counts"]["persons"] == 1 and body["counts"]["distinct_ids"] == 2
            assert body["counts"]["merges"] == 1

            assert c.get(f"/api/projects/@current/persons/{victim[0]['id']}/").status_code == 404
            assert srv.persons(distinct_id=f"old-anon-{MARKER}") == []
            assert srv.events(distinct_id="old-victim@example.com") == []
            assert srv.events(distinct_id=f"old-anon-{MARKER}") == []
            # the bystander is untouched
            assert len(srv.events(distinct_id="old-bystander")) == 4
            assert srv.persons(distinct_id="old-bystander")[0]["properties"] == {"plan": "free"}

            audit = c.get("/api/projects/@current/audit_log/").json()["results"]
            assert audit[0]["action"] == "person_deleted_with_events"
            assert audit[0]["actor"].startswith("api key")
            assert audit[0]["details"]["events"] == 8 and len(audit[0]["subject_hash"]) == 64
            text = json.dumps(audit)
            assert MARKER not in text and "victim" not in text and victim[0]["id"] not in text
            # the hash lets the operator check whether a given person id was deleted
            mine = c.get("/api/projects/@current/audit_log/", params={"person_id": victim[0]["id"]}).json()
            assert [a["id"] for a in mine["results"]] == [audit[0]["id"]]
            assert httpx.get(srv.url + "/api/projects/@current/audit_log/",
                             headers={"Authorization": f"Bearer {srv.token}"}).status_code == 401

        assert files_containing(data, MARKER) == []
        # new events keep flowing after the file was rebuilt
        more = [{"event": "after", "distinct_id": "old-bystander", "timestamp": "2025-03-03T00:00:00Z"}]
        assert httpx.post(srv.url + "/batch/", json={"api_key": srv.token, "batch": more}).status_code == 200
        assert len(srv.events(distinct_id="old-bystander")) == 5
    finally:
        assert stop_server(srv) == 0
    # and it stays that way across a restart
    srv = start_server(data)
    try:
        assert len(srv.events(distinct_id="old-bystander")) == 5
        assert srv.persons(distinct_id="old-victim@example.com") == []
    finally:
        stop_server(srv)
    assert files_containing(data, MARKER) == []


def test_delete_without_events_keeps_the_events(fresh_server):
    srv = fresh_server
    batch = victim_events("keep", "2025-04-01")
    assert httpx.post(srv.url + "/batch/", json={"api_key": srv.token, "batch": batch}).status_code == 200
    person = srv.persons(distinct_id="keep-victim@example.com")[0]
    with srv.api() as c:
        r = c.delete(f"/api/projects/@current/persons/{person['id']}/")
        assert r.status_code == 200, r.text
        assert r.json()["counts"]["events"] == 0 and r.json()["with_events"] is False
        assert c.get(f"/api/projects/@current/persons/{person['id']}/").status_code == 404
        assert c.delete(f"/api/projects/@current/persons/{person['id']}/").status_code == 404
        assert c.get("/api/projects/@current/audit_log/", params={"action": "person_deleted"}).json()[
            "results"][0]["details"]["persons"] == 1
    assert len(srv.events(distinct_id="keep-victim@example.com")) == 2
    assert srv.persons(distinct_id="keep-victim@example.com") == []


def test_cli_delete_against_a_live_server_and_a_stopped_data_dir(tmp_path):
    import sightline
    from sightline.cli import main

    data = tmp_path / "data"
    with sightline.open(data) as core:
        core.ingest(victim_events("cli", "2025-05-01") + victim_events("cli2", "2025-05-01"))
    assert files_containing(data, MARKER)

    # stopped: the command opens the data directory itself
    r = CliRunner().invoke(main, ["persons", "delete", "cli-victim@example.com", "--with-events", "--yes",
                                  "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["counts"]["events"] == 4
    r = CliRunner().invoke(main, ["persons", "delete", "cli-victim@example.com", "--yes", "--data-dir", str(data)])
    assert r.exit_code == 2 and "No person" in r.output
    with sightline.open(data) as core:
        assert core.storage.execute("SELECT count(*) FROM events WHERE distinct_id LIKE 'cli-%'").rows[0][0] == 2
        assert core.storage.execute("SELECT count(*) FROM events WHERE distinct_id LIKE 'cli2-%'").rows[0][0] == 6

    # running: the command asks the server (over the control channel)
    srv = start_server(data)
    try:
        out = subprocess.run([sys.executable, "-m", "sightline.cli", "persons", "delete", "cli2-victim@example.com",
                              "--with-events", "--yes", "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["counts"]["events"] == 4
        assert srv.events(distinct_id="cli2-victim@example.com") == []
        assert len(srv.events(distinct_id="cli2-bystander")) == 2
        out = subprocess.run([sys.executable, "-m", "sightline.cli", "persons", "audit", "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        audit = json.loads(out.stdout)
        assert [a["actor"] for a in audit] == ["cli", "cli"]
        assert MARKER not in out.stdout
    finally:
        stop_server(srv)
    assert files_containing(data, MARKER) == []
