"""Paths: the spec's vector, cleaning, start/end points, and a plain-Python reference."""

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline

T0 = datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
RANGE = {"date_from": "2024-01-01", "date_to": "2024-01-03"}


def pv(u, url, minutes):
    return {"event": "$pageview", "distinct_id": u, "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
            "properties": {"$current_url": url}}


def paths(s, **pf):
    res = s.query({"kind": "PathsQuery", "dateRange": RANGE, "pathsFilter": pf})["results"]
    return {(e["source"], e["target"]): e["value"] for e in res}


@pytest.fixture
def db(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        yield s


def test_spec_vector(db):
    db.ingest([pv("u1", "/home", 0), pv("u1", "/pricing", 1), pv("u1", "/pricing", 2), pv("u1", "/signup", 3),
               pv("u1", "/home", 120), pv("u2", "/home", 0), pv("u2", "/signup", 1)])
    assert paths(db) == {("1_/home", "2_/pricing"): 1, ("2_/pricing", "3_/signup"): 1, ("1_/home", "2_/signup"): 1}
    assert paths(db, startPoint="/pricing") == {("1_/pricing", "2_/signup"): 1}
    assert paths(db, endPoint="/signup") == {("1_/home", "2_/pricing"): 1, ("2_/pricing", "3_/signup"): 1,
                                             ("1_/home", "2_/signup"): 1}
    res = db.query({"kind": "PathsQuery", "dateRange": RANGE, "pathsFilter": {}})["results"]
    first = next(e for e in res if e["source"] == "1_/home" and e["target"] == "2_/pricing")
    assert first["average_conversion_time"] == 120_000  # duplicates collapse onto the later one (+2m)


def test_trailing_slash_and_id_cleaning(db):
    db.ingest([pv("u", "https://x.com/about/", 0), pv("u", "https://x.com/projects/123", 1),
               pv("v", "https://x.com/about", 0), pv("v", "https://x.com/projects/77/", 1)])
    assert paths(db) == {("1_https://x.com/about", "2_https://x.com/projects/:id"): 2}
    assert paths(db, pathReplacements=False) == {("1_https://x.com/about", "2_https://x.com/projects/123"): 1,
                                                 ("1_https://x.com/about", "2_https://x.com/projects/77"): 1}
    custom = paths(db, pathReplacements=False, localPathCleaningFilters=[{"regex": "/projects/.*", "alias": "/projects/*"}])
    assert custom == {("1_https://x.com/about", "2_https://x.com/projects/*"): 2}


def reference(events, limit):
    by_user = {}
    for u, url, m in sorted(events, key=lambda e: (e[0], e[2])):
        by_user.setdefault(u, []).append((m, url))
    edges = Counter()
    for items in by_user.values():
        sessions, cur, last = [], [], None
        for m, url in items:
            if last is not None and m - last >= 30:
                sessions.append(cur)
                cur = []
            cur.append(url)
            last = m
        sessions.append(cur)
        for sess in sessions:
            collapsed = [x for i, x in enumerate(sess) if i + 1 == len(sess) or sess[i + 1] != x][:limit]
            for i in range(len(collapsed) - 1):
                edges[(f"{i + 1}_{collapsed[i]}", f"{i + 2}_{collapsed[i + 1]}")] += 1
    return dict(edges)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000), limit=st.integers(2, 6))
def test_paths_match_reference(tmp_path_factory, seed, limit):
    rng = random.Random(seed)
    events, used = [], set()
    for _ in range(120):
        m = rng.randrange(0, 600)
        while m in used:
            m += 1
        used.add(m)
        events.append((f"u{rng.randrange(8)}", rng.choice(["/a", "/b", "/c", "/d"]), m))
    with sightline.open(tmp_path_factory.mktemp("p") / "d") as s:
        s.ingest([pv(u, url, m) for u, url, m in events])
        got = paths(s, stepLimit=limit, edgeLimit=1000)
    expected = reference(events, limit)
    assert got == expected


def test_label_hash_fallback_and_tied_timestamps_agree(db, monkeypatch):
    """DuckDB runs paths over label hashes; the text version (used when two labels share a hash,
    and on ClickHouse) must give the same edges. Events sharing a timestamp have one order (by
    uuid), so repeated runs agree too."""
    from sightline.query import paths as paths_mod

    rng = random.Random(7)
    urls = ["/a", "/b", "/c", "/d/1", "/d/2"]
    events = []
    for u in range(30):
        t = 0
        for _ in range(rng.randrange(2, 15)):
            t += rng.choice([0, 0, 1, 5, 29, 31, 90])  # minutes; 0 = the same timestamp
            events.append(pv(f"u{u}", rng.choice(urls), t))
    db.ingest(events)
    filters = [{}, {"stepLimit": 3}, {"pathReplacements": True}, {"excludeEvents": ["/b"]}]
    hashed = [db.query({"kind": "PathsQuery", "dateRange": RANGE, "pathsFilter": f})["results"] for f in filters]
    assert any(hashed)
    again = [db.query({"kind": "PathsQuery", "dateRange": RANGE, "pathsFilter": f})["results"] for f in filters]
    assert again == hashed
    monkeypatch.setattr(paths_mod, "_edges_hashed", lambda *a, **k: None)
    text = [db.query({"kind": "PathsQuery", "dateRange": RANGE, "pathsFilter": f})["results"] for f in filters]
    assert text == hashed


def test_conversion_time_counts_whole_milliseconds_like_every_engine(db):
    """Average conversion time is the mean of whole-millisecond differences (each timestamp
    truncated to its millisecond), the same on DuckDB and ClickHouse: sub-millisecond parts that
    rounding would carry up (0.5 ms and more) must not change the figure."""
    def at(user, url, us):
        return {"event": "$pageview", "distinct_id": user, "timestamp": (T0 + timedelta(microseconds=us)).isoformat(),
                "properties": {"$current_url": url}}

    db.ingest([at("x", "/a", 900), at("x", "/b", 10_001_400), at("y", "/a", 20_000_600), at("y", "/b", 30_002_499)])
    res = db.query({"kind": "PathsQuery", "dateRange": RANGE, "pathsFilter": {}})["results"]
    expected = ((10_001 - 0) + (30_002 - 20_000)) / 2  # rounding each instant would give 10,000.5
    assert [(e["source"], e["target"], e["value"], e["average_conversion_time"]) for e in res] == \
        [("1_/a", "2_/b", 2, expected)]
