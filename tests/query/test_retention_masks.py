"""Recurring retention's bit-mask path (two masks of periods per actor, DuckDB) against the
general path (DISTINCT (actor, period) rows joined) on random data: time zones, every period,
cumulative, entity property filters, merged persons, ranges too long for a mask."""

import random
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline
from sightline.query import retention

ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]
DATE_TO = {"Hour": "2024-03-10T20:00:00", "Day": "2024-03-20", "Week": "2024-03-28", "Month": "2024-03-31"}


def make_events(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        # mostly March 2024 (hours around the 10th), some earlier months
        t = datetime(2024, 3, 10, 12, tzinfo=timezone.utc) + timedelta(
            minutes=rng.choice([rng.randrange(-24 * 60, 12 * 60)] * 2 + [rng.randrange(-60 * 24 * 90, 60 * 24 * 20)] * 3))
        out.append({"event": rng.choice(["a", "b", "b"]), "distinct_id": f"u{rng.randrange(30)}",
                    "timestamp": t.isoformat(), "properties": {"plan": rng.choice(["free", "pro"])}})
    for i in range(3):  # anonymous ids merged into known users
        out.append({"event": "$identify", "distinct_id": f"u{i}", "timestamp": "2024-03-05T12:00:00Z",
                    "properties": {"$anon_distinct_id": f"u{i + 15}"}})
    return sorted(out, key=lambda e: e["timestamp"])


def both(s, q: dict, masks: bool = True) -> tuple[dict, dict]:
    """The query on the mask path (which must be taken when ``masks``) and on the general one."""
    saved, original, calls = retention.MASK_PERIODS_MAX, retention.build, []
    retention.build = lambda *a: calls.append(1) or original(*a)
    try:
        fast = s.query(q)
        assert len(calls) == (0 if masks else 1)
        retention.MASK_PERIODS_MAX = 0
        general = s.query(q)
    finally:
        retention.MASK_PERIODS_MAX, retention.build = saved, original
    return fast, general


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000), tz=st.sampled_from(ZONES), period=st.sampled_from(list(DATE_TO)),
       cumulative=st.booleans(), same=st.booleans())
def test_masks_match_the_general_path(tmp_path_factory, seed, tz, period, cumulative, same):
    with sightline.open(tmp_path_factory.mktemp("rm") / "d") as s:
        s.meta.update_project(s.project.id, timezone_name=tz)
        s.ingest(make_events(seed, 300))
        target = {"id": "b" if same else "a", "type": "events"}
        q = {"kind": "RetentionQuery", "dateRange": {"date_to": DATE_TO[period]},
             "retentionFilter": {"period": period, "totalIntervals": 6, "cumulative": cumulative,
                                 "targetEntity": target, "returningEntity": {"id": "b", "type": "events"}}}
        fast, general = both(s, q)
        assert fast == general
        assert period == "Hour" or any(v["count"] for r in fast["results"] for v in r["values"])
        filtered = {**q, "retentionFilter": {**q["retentionFilter"], "returningEntity": {
            "id": "b", "type": "events", "properties": [{"key": "plan", "value": "pro", "operator": "exact"}]}}}
        fast, general = both(s, filtered)
        assert fast == general


def test_other_kinds_use_the_general_path(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        s.ingest(make_events(5, 200))
        base = {"kind": "RetentionQuery", "dateRange": {"date_to": "2024-03-20"}}
        rf = {"period": "Day", "targetEntity": {"id": "a"}, "returningEntity": {"id": "b"}}
        for q in ({**base, "retentionFilter": {**rf, "retentionType": "retention_first_time"}},
                  {**base, "retentionFilter": {**rf, "totalIntervals": 70}},
                  {**base, "retentionFilter": rf, "breakdownFilter": {"breakdown": "plan"}}):
            fast, general = both(s, q, masks=False)
            assert fast == general
