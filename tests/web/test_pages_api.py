"""`GET /api/projects/@current/live_events/`: the web app's Live events source (filters, polling)."""

from __future__ import annotations

import json
import time
import uuid

import httpx

PATH = "/api/projects/@current/live_events/"


def _send(server, batch):
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": batch})
    assert r.status_code == 200, r.text


def _wait(server, **params) -> dict:
    deadline = time.time() + 10
    with server.api() as c:
        while True:
            r = c.get(PATH, params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            if body["results"] or time.time() > deadline:
                return body
            time.sleep(0.1)


def test_live_events_filters_and_polling(server):
    name = f"live-{uuid.uuid4().hex[:8]}"
    browsers = ["Chrome", "Safari", "Firefox", "Chrome", "Chrome", "Safari"]
    batch = [{"event": name, "distinct_id": f"lv-{i % 2}", "timestamp": f"2024-03-01T10:00:0{i}Z",
              "properties": {"$browser": b, "n": i, "$set": {"plan": "pro" if i % 2 else "free"}}}
             for i, b in enumerate(browsers)]
    _send(server, batch)
    body = _wait(server, event=name)
    assert [e["properties"]["n"] for e in body["results"]] == [5, 4, 3, 2, 1, 0]  # newest first
    assert body["latest"] is not None

    with server.api() as c:
        chrome = c.get(PATH, params={"event": name, "properties": json.dumps(
            [{"key": "$browser", "value": "Chrome", "operator": "exact"}])}).json()["results"]
        assert sorted(e["properties"]["n"] for e in chrome) == [i for i, b in enumerate(browsers) if b == "Chrome"]
        big = c.get(PATH, params={"event": name, "properties": json.dumps(
            [{"key": "n", "value": 2, "operator": "gt"}])}).json()["results"]
        assert sorted(e["properties"]["n"] for e in big) == [3, 4, 5]
        pro = c.get(PATH, params={"event": name, "properties": json.dumps(
            [{"key": "plan", "value": "pro", "operator": "exact", "type": "person"}])}).json()["results"]
        assert {e["distinct_id"] for e in pro} == {"lv-1"}
        assert len(c.get(PATH, params={"event": name, "limit": 2}).json()["results"]) == 2

        # polling: only events stored after `latest`
        latest = c.get(PATH, params={"event": name}).json()["latest"]
        assert c.get(PATH, params={"event": name, "since": latest}).json()["results"] == []
    _send(server, [{"event": name, "distinct_id": "lv-new", "properties": {"n": 99}}])
    new = _wait(server, event=name, since=latest)
    assert [e["properties"]["n"] for e in new["results"]] == [99]
    assert new["latest"] > latest


def test_live_events_person_link_only_for_events_with_a_person(server):
    """A personless event (``$process_person_profile: false``) has no person page to link to:
    its ``person_id`` is null; an event with a profile gives the person the persons API shows."""
    name = f"live-pl-{uuid.uuid4().hex[:8]}"
    _send(server, [{"event": name, "distinct_id": "pl-anon", "properties": {"$process_person_profile": False}},
                   {"event": name, "distinct_id": "pl-user", "properties": {"n": 1}}])
    deadline = time.time() + 10
    while True:
        body = _wait(server, event=name)
        if len(body["results"]) == 2 or time.time() > deadline:
            break
        time.sleep(0.1)
    by_id = {e["distinct_id"]: e for e in body["results"]}
    assert by_id["pl-anon"]["person_id"] is None
    pid = by_id["pl-user"]["person_id"]
    with server.api() as c:
        r = c.get(f"/api/projects/@current/persons/{pid}/")
        assert r.status_code == 200 and "pl-user" in r.json()["distinct_ids"]


def test_live_events_rejects_bad_input(server):
    with server.api() as c:
        for params, attr in [({"properties": "{"}, "properties"), ({"properties": '{"a": 1}'}, "properties"),
                             ({"properties": '[{"key": "x", "type": "cohort", "value": 1}]'}, "properties"),
                             ({"properties": '[{"key": "x", "operator": "nope"}]'}, "properties"),
                             ({"since": "yesterday"}, "since"), ({"limit": "x"}, "limit")]:
            r = c.get(PATH, params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["attr"] == attr
    r = httpx.get(server.url + PATH)
    assert r.status_code == 401
    r = httpx.get(server.url + PATH, headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 401 and r.json()["code"] == "project_token_not_allowed"
