"""Funnels: the spec's vectors, and a plain-Python port of PostHog's per-actor algorithm over
random data (ordered, strict, unordered)."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline
from sightline.errors import InvalidInput

UTC = timezone.utc
D0 = datetime(2024, 1, 1, 10, tzinfo=UTC)
RANGE = {"date_from": "2024-01-01", "date_to": "2024-01-31"}


def at(day, sec=0):
    return (D0 + timedelta(days=day - 1, seconds=sec)).isoformat()


def funnel(s, steps, **kw):
    q = {"kind": "FunnelsQuery", "series": [{"event": x} for x in steps], "dateRange": RANGE, **kw}
    return s.query(q)["results"]


def counts(result):
    return [x["count"] for x in result]


@pytest.fixture
def db(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        yield s


def send(s, rows):
    s.ingest([{"event": e, "distinct_id": u, "timestamp": t, "properties": p}
              for u, e, t, *rest in rows for p in [rest[0] if rest else {}]])


def test_vector_1_counts_rates_and_times(db):
    send(db, [("u1", "A", at(1)), ("u1", "B", at(2)), ("u1", "C", at(3)), ("u2", "A", at(1)), ("u2", "C", at(2)),
              ("u3", "B", at(1)), ("u3", "A", at(2)), ("u4", "A", at(1)), ("u4", "B", at(20))])
    r = funnel(db, ["A", "B", "C"])
    assert counts(r) == [4, 1, 1]
    assert r[1]["average_conversion_time"] == 86400 and r[1]["median_conversion_time"] == 86400
    assert r[0]["average_conversion_time"] is None


def test_vector_2_reentry_uses_latest_start_and_duplicate_steps(db):
    send(db, [("u", "A", at(1)), ("u", "A", at(11)), ("u", "B", at(21)), ("v", "pv", at(1))])
    r = funnel(db, ["A", "B"])
    assert counts(r) == [1, 1] and r[1]["average_conversion_time"] == 10 * 86400
    assert counts(funnel(db, ["pv", "pv"])) == [1, 0]


def test_vector_3_strict_and_unordered(db):
    send(db, [("u", "A", at(1)), ("u", "$pageview", at(1, 10)), ("u", "B", at(1, 20)),
              ("w", "C", at(1)), ("w", "A", at(1, 5))])
    # u: A, $pageview, B — strict breaks on the pageview, ordered converts; w only reaches A
    assert counts(funnel(db, ["A", "B"], funnelsFilter={"funnelOrderType": "strict"})) == [2, 0]
    assert counts(funnel(db, ["A", "B"])) == [2, 1]
    # unordered [A, B, C]: w does C then A (2 of 3), u does A and B (2 of 3)
    assert counts(funnel(db, ["A", "B", "C"], funnelsFilter={"funnelOrderType": "unordered"})) == [2, 2, 0]


def test_vector_4_exclusions(db):
    send(db, [("u1", "A", at(1)), ("u1", "cancel", at(1, 10)), ("u1", "C", at(1, 20)),
              ("u2", "A", at(1)), ("u2", "C", at(1, 10)), ("u2", "cancel", at(1, 20)),
              ("u3", "A", at(1)), ("u3", "cancel", at(1, 10)),
              ("u5", "A", at(1)), ("u5", "cancel", at(1, 10)), ("u5", "A", at(1, 20)), ("u5", "C", at(1, 30))])
    r = funnel(db, ["A", "C"], funnelsFilter={"exclusions": [{"event": "cancel", "funnelFromStep": 0, "funnelToStep": 1}]})
    assert counts(r) == [2, 2]  # u2, and u5 through its second attempt
    with pytest.raises(InvalidInput):
        funnel(db, ["A", "C"], funnelsFilter={"exclusions": [{"event": "A", "funnelFromStep": 0, "funnelToStep": 1}]})


def test_vector_5_breakdown_attribution(db):
    send(db, [("u1", "pv", at(1), {"$browser": "Chrome"}), ("u1", "signup", at(1, 60), {"$browser": "Firefox"})])

    def by(**f):
        res = funnel(db, ["pv", "signup"], breakdownFilter={"breakdown": "$browser"}, funnelsFilter=f)
        return {steps[0]["breakdown_value"]: counts(steps) for steps in res}

    assert by(breakdownAttributionType="first_touch") == {"Chrome": [1, 1]}
    assert by(breakdownAttributionType="last_touch") == {"Firefox": [1, 1]}
    assert by(breakdownAttributionType="all_events") == {"Chrome": [1, 0]}
    assert by(breakdownAttributionType="step", breakdownAttributionValue=1) == {"Firefox": [1, 1]}


def test_vector_6_time_to_convert(db):
    send(db, [(f"u{i}", e, at(1, t)) for i, secs in enumerate([60, 120, 600]) for e, t in (("A", 0), ("B", secs))])
    r = funnel(db, ["A", "B"], funnelsFilter={"funnelVizType": "time_to_convert"})
    assert r == {"bins": [[60, 2], [330, 0], [600, 1]], "average_conversion_time": 260}


def test_vector_7_funnel_trends(db):
    send(db, [("u1", "A", at(1)), ("u1", "B", at(1, 60)), ("u2", "A", at(1)), ("u3", "A", at(2)), ("u3", "B", at(2, 60))])
    [r] = db.query({"kind": "FunnelsQuery", "series": [{"event": "A"}, {"event": "B"}],
                    "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-02"},
                    "funnelsFilter": {"funnelVizType": "trends"}})["results"]
    assert r["reached_from_step_count"] == [2, 1] and r["reached_to_step_count"] == [1, 1]
    assert r["data"] == [50.0, 100.0]


def test_identity_merge_mid_funnel_counts_one_person(db):
    db.ingest([{"event": "A", "distinct_id": "anon", "timestamp": at(1)},
               {"event": "$identify", "distinct_id": "user", "timestamp": at(1, 30),
                "properties": {"$anon_distinct_id": "anon"}},
               {"event": "B", "distinct_id": "user", "timestamp": at(1, 60)}])
    assert counts(funnel(db, ["A", "B"])) == [1, 1]


# -- a plain-Python port of the per-actor algorithm (spec §2) ---------------------------------
class Attempt:
    def __init__(self, start, path):
        self.start, self.path, self.excluded = start, path, False


def reference_actor(events, n, window, order):
    """events: [(ts_seconds, set of 1-based steps)] sorted by time, no ties. Returns steps reached (0-based)."""
    if order == "unordered":
        best = 0
        for i, (t, _) in enumerate(events):
            seen = set()
            for t2, steps in events[: i + 1]:
                if t - t2 <= window:
                    seen |= steps
            best = max(best, len(seen))
        return best - 1 if best else None
    entered = [None] * (n + 1)
    max_step = (0, None)
    for t, steps in events:
        entered[0] = Attempt(t, [])
        for s in sorted(steps, reverse=True):
            prev = entered[s - 1]
            if prev is None or t - prev.start > window:
                continue
            if entered[s] is not None and entered[s].start == prev.start and s > 1:
                continue
            if s == 1 and entered[1] is not None and entered[1].start == t:
                continue
            if prev.excluded:
                continue
            att = Attempt(prev.start if s > 1 else t, prev.path + [t])
            entered[s] = att
            if s > max_step[0]:
                max_step = (s, att)
        if order == "strict":
            for k in range(1, n + 1):
                if k not in steps:
                    entered[k] = None
        if max_step[0] == n:
            break
    return max_step[0] - 1 if max_step[0] else None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000), order=st.sampled_from(["ordered", "ordered", "strict", "unordered"]),
       n=st.integers(2, 4), window_h=st.sampled_from([1, 6, 48]))
def test_random_funnels_match_reference(tmp_path_factory, seed, order, n, window_h):
    rng = random.Random(seed)
    names = ["A", "B", "C", "D", "noise"]
    steps = names[:n] if rng.random() < 0.7 else [rng.choice(names[:3]) for _ in range(n)]
    events = []
    used = set()
    for u in range(25):
        for _ in range(rng.randrange(0, 12)):
            sec = rng.randrange(0, 5 * 86400)
            while sec in used:
                sec += 1
            used.add(sec)
            events.append((f"u{u}", rng.choice(names), sec))
    window = window_h * 3600
    expected = [0] * n
    for u in {e[0] for e in events}:
        seq = sorted((sec, {i + 1 for i, st_ in enumerate(steps) if st_ == name}) for uu, name, sec in events if uu == u)
        if order != "strict":
            seq = [x for x in seq if x[1]]
        r = reference_actor(seq, n, window, order)
        if r is not None:
            for k in range(r + 1):
                expected[k] += 1
    with sightline.open(tmp_path_factory.mktemp("f") / "d") as s:
        s.ingest([{"event": name, "distinct_id": u, "timestamp": (D0 + timedelta(seconds=sec)).isoformat()}
                  for u, name, sec in events])
        got = counts(funnel(s, steps, funnelsFilter={"funnelOrderType": order, "funnelWindowInterval": window_h,
                                                     "funnelWindowIntervalUnit": "hour"}))
    assert got == expected, (steps, order)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000), n=st.integers(2, 4), window_h=st.sampled_from([1, 12, 72]))
def test_ordered_funnels_match_clickhouse_windowfunnel(tmp_path_factory, seed, n, window_h):
    """ClickHouse's own windowFunnel (through chdb) on the same events agrees for plain ordered funnels."""
    chdb = pytest.importorskip("chdb")
    rng = random.Random(seed)
    names = ["A", "B", "C", "D"][:n] + ["noise"]
    rows, used = [], set()
    for u in range(40):
        for _ in range(rng.randrange(0, 10)):
            sec = rng.randrange(0, 5 * 86400)
            while sec in used:
                sec += 1
            used.add(sec)
            rows.append((f"u{u}", rng.choice(names), sec))
    base = int(D0.timestamp())
    values = ", ".join(f"('{u}', '{e}', {base + sec})" for u, e, sec in rows) or "('x', 'noise', 0)"
    conds = ", ".join(f"e = '{x}'" for x in names[:n])
    sql = (f"SELECT level FROM (SELECT u, windowFunnel({window_h * 3600})(toDateTime(t), {conds}) AS level "
           f"FROM (SELECT * FROM values('u String, e String, t UInt32', {values})) GROUP BY u)")
    levels = [int(x) for x in str(chdb.query(sql, "CSV")).split()]
    expected = [sum(1 for lv in levels if lv >= k + 1) for k in range(n)]
    with sightline.open(tmp_path_factory.mktemp("ch") / "d") as s:
        s.ingest([{"event": e, "distinct_id": u, "timestamp": (D0 + timedelta(seconds=sec)).isoformat()}
                  for u, e, sec in rows])
        got = counts(funnel(s, names[:n], funnelsFilter={"funnelWindowInterval": window_h,
                                                         "funnelWindowIntervalUnit": "hour"}))
    assert got == expected


def test_trends_count_every_entry_bucket(db):
    # day 1: A only; day 2: A then B. Steps count the person once; trends see two entry days.
    send(db, [("u", "A", at(1)), ("u", "A", at(2)), ("u", "B", at(2, 60))])
    assert counts(funnel(db, ["A", "B"])) == [1, 1]
    [r] = db.query({"kind": "FunnelsQuery", "series": [{"event": "A"}, {"event": "B"}],
                    "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-02"},
                    "funnelsFilter": {"funnelVizType": "trends"}})["results"]
    assert r["reached_from_step_count"] == [1, 1] and r["reached_to_step_count"] == [1, 1]
