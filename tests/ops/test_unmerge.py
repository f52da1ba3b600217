"""Reversible merges: the merge log, `POST .../persons/<id>/unmerge/`, `.../split/` and
`sightline persons unmerge`; insights count two persons again afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
from click.testing import CliRunner

from livesrv import start_server, stop_server

DAY = "2025-06-10"
DAU = {"kind": "TrendsQuery", "series": [{"event": "$pageview", "math": "dau"}],
       "dateRange": {"date_from": DAY, "date_to": DAY}}
FUNNEL = {"kind": "FunnelsQuery", "series": [{"event": "signed_up"}, {"event": "purchase"}],
          "dateRange": {"date_from": DAY, "date_to": DAY}}


def wrong_merge(a: str, b: str) -> list[dict]:
    """Two people: ``a`` (a shared kiosk) and ``b``; a buggy integration identifies ``b`` with
    ``a`` as its anonymous id, merging ``a``'s person into ``b``'s. ``a`` keeps sending events."""
    t = lambda m: f"{DAY}T10:{m:02d}:00Z"  # noqa: E731
    return [
        {"event": "$pageview", "distinct_id": a, "timestamp": t(0), "$set": {"kiosk": "lobby", "shared": "a"}},
        {"event": "signed_up", "distinct_id": a, "timestamp": t(1)},
        {"event": "$pageview", "distinct_id": b, "timestamp": t(2), "$set": {"plan": "pro", "shared": "b"}},
        {"event": "$identify", "distinct_id": b, "timestamp": t(3), "properties": {"$anon_distinct_id": a}},
        {"event": "$pageview", "distinct_id": a, "timestamp": t(4), "$set": {"floor": 3}},  # after the merge
        {"event": "purchase", "distinct_id": b, "timestamp": t(5)},
    ]


def query(c: httpx.Client, q: dict) -> dict:
    r = c.post("/api/projects/@current/query/", json={"query": q})
    assert r.status_code == 200, r.text
    return r.json()


def dau(c) -> int:
    return query(c, DAU)["results"][0]["data"][0]


def funnel(c) -> list[int]:
    return [s["count"] for s in query(c, FUNNEL)["results"]]


def test_unmerge_over_http_restores_the_person_and_the_counts(fresh_server):
    srv = fresh_server
    assert httpx.post(srv.url + "/batch/", json={"api_key": srv.token,
                                                 "batch": wrong_merge("kiosk-1", "bob")}).status_code == 200
    merged = srv.persons(distinct_id="bob")[0]
    assert sorted(merged["distinct_ids"]) == ["bob", "kiosk-1"]
    with srv.api() as c:
        assert dau(c) == 1 and funnel(c) == [1, 1]
        merges = c.get(f"/api/projects/@current/persons/{merged['id']}/merges/").json()["results"]
        assert len(merges) == 1 and merges[0]["source_distinct_ids"] == ["kiosk-1"]
        assert merges[0]["reason"] == "$identify" and merges[0]["undone"] is False
        assert merges[0]["source_properties"] == {"kiosk": "lobby", "shared": "a"}

        base = f"/api/projects/@current/persons/{merged['id']}/unmerge/"
        assert c.post(base, json={}).status_code == 400
        assert c.post(base, json={"merge_id": "1"}).status_code == 400
        assert c.post(base, json={"merge_id": 999}).status_code == 404
        assert httpx.post(srv.url + base, json={"merge_id": merges[0]["id"]},
                          headers={"Authorization": f"Bearer {srv.token}"}).status_code == 401
        r = c.post(base, json={"merge_id": merges[0]["id"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["restored_person_id"] == merges[0]["source_person_id"]
        # kiosk-1's events: two before the merge, one after it (stored with bob's person id)
        assert body["events_reassigned"] == 3

        assert dau(c) == 2
        assert funnel(c) == [1, 0]  # the kiosk signed up; bob's purchase is bob's
        kiosk = srv.persons(distinct_id="kiosk-1")[0]
        bob = srv.persons(distinct_id="bob")[0]
        assert kiosk["id"] == body["restored_person_id"] and kiosk["distinct_ids"] == ["kiosk-1"]
        assert kiosk["properties"] == {"kiosk": "lobby", "shared": "a", "floor": 3}
        assert kiosk["is_identified"] is False
        assert bob["id"] == merged["id"] and bob["distinct_ids"] == ["bob"]
        assert bob["properties"] == {"plan": "pro", "shared": "b"}  # kiosk's keys are gone
        assert {e["distinct_id"] for e in srv.events(person_id=kiosk["id"])} == {"kiosk-1"}
        assert len(srv.events(person_id=kiosk["id"])) == 3

        again = c.post(base, json={"merge_id": merges[0]["id"]})
        assert again.status_code == 409 and again.json()["code"] == "already_unmerged"
        log = c.get(f"/api/projects/@current/persons/{merged['id']}/merges/").json()["results"]
        assert log[0]["undone"] is True
        audit = c.get("/api/projects/@current/audit_log/", params={"action": "person_unmerged"}).json()
        assert audit["results"][0]["details"]["events_reassigned"] == 3

        # new events of the kiosk go to the restored person
        more = [{"event": "$pageview", "distinct_id": "kiosk-1", "timestamp": f"{DAY}T11:00:00Z"}]
        assert httpx.post(srv.url + "/batch/", json={"api_key": srv.token, "batch": more}).status_code == 200
        assert len(srv.events(person_id=kiosk["id"])) == 4
        assert dau(c) == 2


def test_split_gives_every_distinct_id_its_own_person(fresh_server):
    srv = fresh_server
    batch = [{"event": "$pageview", "distinct_id": d, "timestamp": f"{DAY}T09:0{i}:00Z"}
             for i, d in enumerate(["s-a", "s-b", "s-c"])]
    batch += [{"event": "$merge_dangerously", "distinct_id": "s-a", "timestamp": f"{DAY}T09:05:00Z",
               "properties": {"alias": d}} for d in ("s-b", "s-c")]
    assert httpx.post(srv.url + "/batch/", json={"api_key": srv.token, "batch": batch}).status_code == 200
    person = srv.persons(distinct_id="s-a")[0]
    assert sorted(person["distinct_ids"]) == ["s-a", "s-b", "s-c"]
    with srv.api() as c:
        assert dau(c) == 1
        r = c.post(f"/api/projects/@current/persons/{person['id']}/split/", json={})
        assert r.status_code == 200 and r.json()["success"] is True, r.text
        assert dau(c) == 3
        ids = {d: srv.persons(distinct_id=d)[0]["id"] for d in ("s-a", "s-b", "s-c")}
        assert len(set(ids.values())) == 3 and ids["s-a"] == person["id"]
        assert c.post(f"/api/projects/@current/persons/{person['id']}/split/", json={}).status_code == 409


def test_cli_unmerge_against_a_stopped_data_dir_and_a_live_server(tmp_path):
    import sightline
    from sightline.cli import main

    data = tmp_path / "data"
    with sightline.open(data) as core:
        core.ingest(wrong_merge("kiosk-1", "bob") + wrong_merge("kiosk-2", "carol"))
        assert core.query(DAU)["results"][0]["data"] == [2]

    runner = CliRunner()
    r = runner.invoke(main, ["persons", "merges", "bob", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert [m["source_distinct_ids"] for m in json.loads(r.output)] == [["kiosk-1"]]
    r = runner.invoke(main, ["persons", "unmerge", "kiosk-1", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["distinct_ids"] == ["kiosk-1"]
    r = runner.invoke(main, ["persons", "unmerge", "kiosk-1", "--data-dir", str(data)])
    assert r.exit_code == 2  # nothing left to undo
    with sightline.open(data) as core:
        assert core.query(DAU)["results"][0]["data"] == [3]

    srv = start_server(data)
    try:
        out = subprocess.run([sys.executable, "-m", "sightline.cli", "persons", "unmerge", "kiosk-2",
                              "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["events_reassigned"] == 3
        with srv.api() as c:
            assert dau(c) == 4
        out = subprocess.run([sys.executable, "-m", "sightline.cli", "persons", "show", "kiosk-2",
                              "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and json.loads(out.stdout)["distinct_ids"] == ["kiosk-2"]
    finally:
        stop_server(srv)
