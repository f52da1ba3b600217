"""Cohorts: static and dynamic (properties, behaviour), as filters in queries and over HTTP."""

from datetime import datetime, timezone

import httpx
import pytest

import sightline
from sightline.errors import InvalidInput
from sightline.query import cohorts as service
from sightline.query.runner import run_query

UTC = timezone.utc


@pytest.fixture
def db(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        yield s


def member_ids(s, cid, now):
    # evaluate membership "as of" now through a trends filter over all time
    res = run_query(s, {"kind": "TrendsQuery", "series": [{"event": "$pageview", "math": "dau"}],
                        "trendsFilter": {"display": "BoldNumber"},
                        "dateRange": {"date_from": "2023-01-01", "date_to": "2024-12-31"},
                        "properties": [{"type": "cohort", "key": "id", "value": cid}]}, now=now)
    return res["results"][0]["aggregated_value"]


def test_spec_vector_behavioural_cohort(db):
    rows = [("u1", "2024-01-02"), ("u1", "2024-01-04"), ("u1", "2024-01-07"),
            ("u2", "2023-12-30"), ("u2", "2024-01-03"), ("u2", "2024-01-05")]
    db.ingest([{"event": "$pageview", "distinct_id": u, "timestamp": f"{d}T12:00:00Z"} for u, d in rows])
    cid = service.create(db, db.project.id, {"name": "active", "filters": {"properties": {"type": "AND", "values": [
        {"type": "behavioral", "key": "$pageview", "value": "performed_event_multiple", "operator": "gte",
         "operator_value": 3, "time_value": 7, "time_interval": "day"}]}}})["id"]
    now = datetime(2024, 1, 8, 12, tzinfo=UTC)
    assert member_ids(db, cid, now) == 1  # u1 only: u2 has 2 pageviews in the window


def test_property_static_nested_and_negated_cohorts(db):
    db.ingest([{"event": "$pageview", "distinct_id": f"u{i}", "timestamp": "2024-01-01T00:00:00Z",
                "$set": {"plan": "pro" if i % 2 else "free", "n": i}} for i in range(10)])
    pro = service.create(db, db.project.id, {"name": "pro", "filters": {"properties": {"type": "AND", "values": [
        {"key": "plan", "value": "pro", "type": "person"}]}}})
    assert pro["count"] == 5
    static = service.create(db, db.project.id, {"name": "csv", "is_static": True,
                                                "csv": "distinct_id\nu1\nu2\nu3\nnobody\n"})
    assert static["count"] == 3
    both = service.create(db, db.project.id, {"name": "pro and listed", "filters": {"properties": {
        "type": "AND", "values": [{"type": "cohort", "value": pro["id"]}, {"type": "cohort", "value": static["id"]}]}}})
    assert both["count"] == 2  # u1, u3
    not_pro = service.create(db, db.project.id, {"name": "not pro", "filters": {"properties": {
        "type": "OR", "values": [{"type": "cohort", "value": pro["id"], "negation": True}]}}})
    assert not_pro["count"] == 5
    big = service.create(db, db.project.id, {"name": "n>6", "filters": {"properties": {"type": "AND", "values": [
        {"key": "n", "value": 6, "operator": "gt", "type": "person"}]}}})
    assert sorted(p["distinct_ids"][0] for p in service.members(db, db.project.id, big["id"])) == ["u7", "u8", "u9"]
    # as a filter in a funnel and in retention
    res = db.query({"kind": "FunnelsQuery", "series": [{"event": "$pageview"}, {"event": "$pageview"}],
                    "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-02"},
                    "properties": [{"type": "cohort", "key": "id", "value": static["id"], "operator": "not_in"}]})
    assert res["results"][0]["count"] == 7


def test_invalid_cohorts(db):
    with pytest.raises(InvalidInput):
        service.create(db, db.project.id, {"name": "x", "filters": {"properties": {"type": "AND", "values": [
            {"type": "behavioral", "key": "$pageview", "value": "performed_event", "time_interval": "fortnight"}]}}})
    with pytest.raises(InvalidInput):
        service.create(db, db.project.id, {"filters": {}})
    with pytest.raises(InvalidInput):
        db.query({"kind": "TrendsQuery", "series": [{"event": "e"}], "properties": [{"type": "cohort", "key": "id", "value": 999}]})


def test_cohorts_api(server):
    with server.api() as c:
        r = c.post("/api/projects/@current/cohorts/", json={"name": "beta", "is_static": True, "distinct_ids": ["a", "b"]})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        assert any(x["id"] == cid for x in c.get("/api/projects/@current/cohorts/").json()["results"])
        r = c.patch(f"/api/projects/@current/cohorts/{cid}/", json={"name": "beta testers"})
        assert r.json()["name"] == "beta testers"
        r = c.post("/api/projects/@current/cohorts/", content=b"id\nx1\nx2\n",
                   headers={"Content-Type": "text/csv"})
        assert r.status_code == 400  # a CSV needs a name: send JSON with "csv"
        r = c.post("/api/projects/@current/cohorts/", json={"name": "bad", "filters": {"properties": {
            "type": "AND", "values": [{"key": "plan", "operator": "nope", "value": 1}]}}})
        assert r.status_code == 400
        assert c.get(f"/api/projects/@current/cohorts/{cid}/persons/").status_code == 200
        assert c.delete(f"/api/projects/@current/cohorts/{cid}/").status_code == 204
        assert c.get(f"/api/projects/@current/cohorts/{cid}/").status_code == 404
    assert httpx.get(server.url + "/api/projects/@current/cohorts/").status_code == 401


def test_cohort_breakdown_overlaps_and_all_users(db):
    db.ingest([{"event": "pv", "distinct_id": f"u{i}", "timestamp": "2024-01-01T10:00:00Z",
                "$set": {"plan": "pro" if i < 4 else "free"}} for i in range(10)])
    pro = service.create(db, db.project.id, {"name": "pro", "filters": {"properties": {"type": "AND", "values": [
        {"key": "plan", "value": "pro", "type": "person"}]}}})["id"]
    early = service.create(db, db.project.id, {"name": "early", "is_static": True, "distinct_ids": ["u0", "u5"]})["id"]
    res = db.query({"kind": "TrendsQuery", "series": [{"event": "pv", "math": "dau"}],
                    "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-01"},
                    "breakdownFilter": {"breakdown_type": "cohort", "breakdown": [pro, early, "all"]}})["results"]
    got = {r["label"]: r["data"] for r in res}
    assert got == {"pro": [4], "early": [2], "All users": [10]}
