"""Lifecycle's bit-mask path (one mask of active periods per actor, DuckDB) against the general
path (DISTINCT (actor, period) rows and a window over them) on random data: time zones with DST,
every interval, persons created before, in and after the range, merged persons, personless
events, ranges too long for a mask."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline
from sightline.query import lifecycle

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Europe/Berlin"]
RANGES = {"hour": ("2024-03-30T20:00:00", "2024-03-31T08:00:00"),  # Berlin's DST night
          "day": ("2024-03-05", "2024-03-20"), "week": ("2024-02-01", "2024-04-10"),
          "month": ("2023-11-01", "2024-04-30")}


def make_events(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u = f"u{rng.randrange(25)}"
        # mostly March 2024 around Berlin's DST switch, some months before (earlier creation)
        day = rng.choice([rng.randrange(1, 32)] * 4 + [rng.randrange(-120, 0)])
        t = datetime(2024, 3, 1, tzinfo=timezone.utc) + timedelta(days=day, minutes=rng.randrange(24 * 60))
        ts = t.isoformat()
        props = {"$process_person_profile": False} if rng.random() < 0.05 else {}
        out.append({"event": rng.choice(["pv", "pv", "other"]), "distinct_id": u, "timestamp": ts,
                    "properties": props})
    # merges: anonymous ids identified as one of the users mid-way
    for i in range(3):
        out.append({"event": "$identify", "distinct_id": f"u{i}", "timestamp": "2024-03-10T12:00:00Z",
                    "properties": {"$anon_distinct_id": f"u{i + 10}"}})
    return sorted(out, key=lambda e: e["timestamp"])


def both(s, q: dict, masks: bool = True) -> tuple[dict, dict]:
    """The query on the mask path (which must be taken when ``masks``) and on the general one."""
    saved, original, calls = lifecycle.MASK_PERIODS_MAX, lifecycle._seq, []
    lifecycle._seq = lambda *a: calls.append(1) or original(*a)
    try:
        fast = s.query(q)
        assert len(calls) == (0 if masks else 1)
        lifecycle.MASK_PERIODS_MAX = 0
        general = s.query(q)
    finally:
        lifecycle.MASK_PERIODS_MAX, lifecycle._seq = saved, original
    return fast, general


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000), tz=st.sampled_from(ZONES), interval=st.sampled_from(list(RANGES)),
       monday=st.booleans())
def test_masks_match_the_general_path(tmp_path_factory, seed, tz, interval, monday):
    with sightline.open(tmp_path_factory.mktemp("lm") / "d") as s:
        s.meta.update_project(s.project.id, timezone_name=tz, settings={"week_start_day": 1 if monday else 0})
        s.ingest(make_events(seed, 250))
        date_from, date_to = RANGES[interval]
        q = {"kind": "LifecycleQuery", "series": [{"event": "pv"}], "interval": interval,
             "dateRange": {"date_from": date_from, "date_to": date_to}}
        fast, general = both(s, q)
        assert fast == general
        assert interval == "hour" or any(any(r["data"]) for r in fast["results"])
        # all events, and a property filter
        q2 = {**q, "series": [{}], "properties": [{"key": "$process_person_profile", "operator": "is_not_set"}]}
        fast, general = both(s, q2)
        assert fast == general


def test_a_range_longer_than_a_mask_uses_the_general_path(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        s.ingest(make_events(3, 300))
        q = {"kind": "LifecycleQuery", "series": [{"event": "pv"}], "interval": "hour",
             "dateRange": {"date_from": "2024-03-08", "date_to": "2024-03-12"}}  # 5 days: 122 hours read
        fast, general = both(s, q, masks=False)
        assert fast == general
        q["dateRange"] = {"date_from": "2024-03-08T00:00:00", "date_to": "2024-03-09T12:00:00"}  # 38 hours
        fast, general = both(s, q)
        assert fast == general and any(any(r["data"]) for r in fast["results"])


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_spec_vector_on_the_mask_path(tmp_path, tz):
    with sightline.open(tmp_path / "d") as s:
        s.meta.update_project(s.project.id, timezone_name=tz)
        s.ingest([{"event": "other", "distinct_id": "u2", "timestamp": "2023-12-01T17:00:00Z"}]
                 + [{"event": "pv", "distinct_id": u, "timestamp": f"2024-01-{d:02d}T17:00:00Z"}
                    for u, d in (("u1", 2), ("u1", 3), ("u2", 2), ("u2", 4))])
        q = {"kind": "LifecycleQuery", "series": [{"event": "pv"}],
             "dateRange": {"date_from": "2024-01-02", "date_to": "2024-01-04"}}
        fast, general = both(s, q)
    got = {r["status"]: r["data"] for r in fast["results"]}
    assert got == {"new": [1, 0, 0], "returning": [0, 1, 0], "resurrecting": [1, 0, 1], "dormant": [0, -1, -1]}
    assert fast == general
