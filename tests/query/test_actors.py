"""Persons behind a number: every insight's actors agree with its counts."""

from datetime import datetime, timedelta, timezone

import pytest

import sightline

T0 = datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
RANGE = {"date_from": "2024-01-01", "date_to": "2024-01-05"}


@pytest.fixture(scope="module")
def db(tmp_path_factory, store_engine):
    s = sightline.open(tmp_path_factory.mktemp("a") / "d")
    rows = []
    for i in range(12):
        u = f"u{i}"
        rows.append({"event": "A", "distinct_id": u, "timestamp": (T0 + timedelta(days=i % 3)).isoformat(),
                     "properties": {"$browser": "Chrome" if i % 2 else "Safari"}, "$set": {"email": f"{u}@x.io"}})
        if i % 2 == 0:
            rows.append({"event": "B", "distinct_id": u, "timestamp": (T0 + timedelta(days=i % 3, hours=1)).isoformat()})
        if i % 4 == 0:
            rows.append({"event": "A", "distinct_id": u, "timestamp": (T0 + timedelta(days=3)).isoformat()})
    s.ingest(rows)
    yield s
    s.close()


def actors(db, source, **kw):
    return db.query({"kind": "InsightActorsQuery", "source": source, **kw}).raw


def test_trend_point_persons_match_the_count(db):
    source = {"kind": "TrendsQuery", "series": [{"event": "A", "math": "dau"}], "dateRange": RANGE,
              "breakdownFilter": {"breakdown": "$browser"}}
    res = db.query(source)["results"]
    for series in res:
        for day, value in zip(series["days"], series["data"]):
            got = actors(db, source, day=day, breakdown=series["breakdown_value"])
            assert len(got["results"]) == value
            assert all(p["properties"]["email"].endswith("@x.io") for p in got["results"])


def test_funnel_step_and_dropoff_persons(db):
    source = {"kind": "FunnelsQuery", "series": [{"event": "A"}, {"event": "B"}], "dateRange": RANGE}
    counts = [x["count"] for x in db.query(source)["results"]]
    assert len(actors(db, source, funnelStep=1)["results"]) == counts[0]
    converted = actors(db, source, funnelStep=2)["results"]
    assert len(converted) == counts[1]
    assert {p["distinct_ids"][0] for p in converted} == {f"u{i}" for i in range(0, 12, 2)}
    assert len(actors(db, source, funnelStep=-2)["results"]) == counts[0] - counts[1]


def test_retention_lifecycle_stickiness_persons(db):
    ret = {"kind": "RetentionQuery", "dateRange": {"date_to": "2024-01-04"},
           "retentionFilter": {"period": "Day", "totalIntervals": 4, "targetEntity": {"id": "A"},
                               "returningEntity": {"id": "A"}}}
    rows = db.query(ret)["results"]
    for i, row in enumerate(rows):
        assert len(actors(db, ret, interval=i)["results"]) == row["values"][0]["count"]
        for k in range(1, 4 - i):
            assert len(actors(db, ret, interval=i, period=k)["results"]) == row["values"][k]["count"]
    life = {"kind": "LifecycleQuery", "series": [{"event": "A"}], "dateRange": RANGE}
    for series in db.query(life)["results"]:
        for day, value in zip(series["days"], series["data"]):
            assert len(actors(db, life, day=day, status=series["status"])["results"]) == abs(value)
    st = {"kind": "StickinessQuery", "series": [{"event": "A"}], "dateRange": RANGE}
    [series] = db.query(st)["results"]
    for k, value in zip(series["days"], series["data"]):
        assert len(actors(db, st, day=k)["results"]) == value


def test_pagination(db):
    source = {"kind": "TrendsQuery", "series": [{"event": "A"}], "dateRange": RANGE}
    first = actors(db, source, limit=5)
    second = actors(db, source, limit=5, offset=5)
    assert first["hasMore"] and len(first["results"]) == 5
    assert not {p["id"] for p in first["results"]} & {p["id"] for p in second["results"]}
