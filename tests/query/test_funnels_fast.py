"""The fast path for ordered funnels of distinct events (sightline/query/funnel_fast.py) against the
general builder and a plain-Python enumeration of every attempt: counts, average and median
conversion times, time-to-convert bins and the persons of each step and drop-off.

The random data is dense in the cases the fast path reasons about: events of different steps at
the same timestamp, repeated starts, several step-2 events per start, events exactly at the end
of the window, steps with property filters, and identity merges."""

from __future__ import annotations

import random
import statistics
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline
from sightline.query import funnel_fast

UTC = timezone.utc
D0 = datetime(2024, 1, 1, 10, tzinfo=UTC)
RANGE = {"date_from": "2024-01-01", "date_to": "2024-01-31"}


def _spy(monkeypatch):
    """Records the statements built by the fast path, so a test knows it ran."""
    calls = []
    for name in ("steps_sql", "actors_sql", "ctes_sql"):
        original = getattr(funnel_fast, name)

        def wrapped(f, *args, _original=original, _name=name):
            calls.append(_name)
            return _original(f, *args)

        monkeypatch.setattr(funnel_fast, name, wrapped)
    return calls


@pytest.fixture
def spy(monkeypatch):
    return _spy(monkeypatch)


def run_both(s, query, monkeypatch):
    """The result of ``query`` with the fast path, and with the general builder."""
    fast = s.query(query).raw
    monkeypatch.setattr(funnel_fast, "ENABLED", False)
    try:
        general = s.query(query).raw
    finally:
        monkeypatch.setattr(funnel_fast, "ENABLED", True)
    return fast, general


def close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
    return a == b


def same_steps(fast, general):
    assert len(fast) == len(general)
    for x, y in zip(fast, general):
        assert set(x) == set(y)
        for k in x:
            assert close(x[k], y[k]), (k, x, y)


def reference(events, steps, window):
    """events: [(actor, event, seconds, props)]. Every start's greedy chain; per actor the best
    (most steps, earliest last step, latest start). Returns (counts, avg times, median times, per-actor reached)."""
    n = len(steps)
    by_actor: dict[str, list] = {}
    for actor, name, sec, props in events:
        for i, (ev, cond) in enumerate(steps):
            if name == ev and all(props.get(k) == v for k, v in cond.items()):
                by_actor.setdefault(actor, []).append((sec, i))
    reached_of, times = {}, [[] for _ in range(n - 1)]
    for actor, evs in by_actor.items():
        evs.sort()
        best = None
        for t1, i in evs:
            if i != 0:
                continue
            path = [t1]
            for k in range(1, n):
                nxt = next((t for t, j in evs if j == k and t >= path[-1]), None)
                if nxt is None or nxt - t1 > window:
                    break
                path.append(nxt)
            key = (len(path), -path[-1], t1)
            if best is None or key > best[0]:
                best = (key, path)
        if best is None:
            continue
        path = best[1]
        reached_of[actor] = len(path) - 1
        for k in range(len(path) - 1):
            times[k].append(path[k + 1] - path[k])
    counts = [sum(1 for r in reached_of.values() if r >= k) for k in range(n)]
    avgs = [statistics.fmean(t) if t else None for t in times]
    meds = [float(statistics.median(t)) if t else None for t in times]
    return counts, avgs, meds, reached_of


def random_events(rng, names, actors=30):
    events, props_values = [], ["x", "y"]
    for u in range(actors):
        base = rng.randrange(0, 3 * 86400)
        t = base
        for _ in range(rng.randrange(0, 14)):
            # small steps make ties and window boundaries common
            t += rng.choice([0, 0, 1, 60, 1800, 3600, 7200, 86400])
            events.append((f"u{u}", rng.choice(names), t, {"p": rng.choice(props_values)}))
    return events


def ingest(s, events):
    s.ingest([{"event": name, "distinct_id": u, "timestamp": (D0 + timedelta(seconds=sec)).isoformat(),
               "properties": props} for u, name, sec, props in events])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 1_000_000), n=st.integers(2, 4), window_h=st.sampled_from([1, 2, 24]),
       with_props=st.booleans())
def test_fast_path_matches_general_builder_and_reference(tmp_path_factory, seed, n, window_h, with_props):
    with pytest.MonkeyPatch.context() as mp:
        _check_random_funnel(tmp_path_factory, mp, seed, n, window_h, with_props)


def _check_random_funnel(tmp_path_factory, monkeypatch, seed, n, window_h, with_props):
    rng = random.Random(seed)
    names = ["A", "B", "C", "D", "noise"]
    order = rng.sample(names[:4], n)
    conds = [({"p": "x"} if with_props and rng.random() < 0.4 else {}) for _ in order]
    steps = list(zip(order, conds))
    events = random_events(rng, names)
    window = window_h * 3600
    # events exactly at the end of some window
    for u, name, sec, props in list(events[:10]):
        events.append((u, rng.choice(order[1:]), sec + window, props))
    series = [{"event": e, **({"properties": [{"key": k, "value": v, "operator": "exact", "type": "event"}
                                              for k, v in c.items()]} if c else {})} for e, c in steps]
    query = {"kind": "FunnelsQuery", "series": series, "dateRange": RANGE,
             "funnelsFilter": {"funnelWindowInterval": window_h, "funnelWindowIntervalUnit": "hour"}}
    calls = _spy(monkeypatch)
    counts, avgs, meds, reached_of = reference(events, steps, window)
    with sightline.open(tmp_path_factory.mktemp("ff") / "d") as s:
        ingest(s, events)
        fast, general = run_both(s, query, monkeypatch)
        assert calls == ["steps_sql"]
        same_steps(fast["results"], general["results"])
        assert [x["count"] for x in fast["results"]] == counts
        for k in range(1, n):
            assert close(fast["results"][k]["average_conversion_time"], avgs[k - 1]) or \
                (fast["results"][k]["average_conversion_time"] is None and avgs[k - 1] is None)
            assert close(fast["results"][k]["median_conversion_time"], meds[k - 1]) or \
                (fast["results"][k]["median_conversion_time"] is None and meds[k - 1] is None)

        # time to convert (from step 1 to the last step) and persons of every step and drop-off
        frm = rng.randrange(0, n - 1)
        ttc = dict(query, funnelsFilter={**query["funnelsFilter"], "funnelVizType": "time_to_convert",
                                         "funnelFromStep": frm, "funnelToStep": rng.randrange(frm + 1, n)})
        a, b = run_both(s, ttc, monkeypatch)
        assert a == b and calls[-1] == "ctes_sql"
        for step in list(range(1, n + 1)) + [-k for k in range(2, n + 1)]:
            pq = {"kind": "InsightActorsQuery", "source": query, "funnelStep": step, "limit": 1000}
            a, b = run_both(s, pq, monkeypatch)
            assert calls[-1] == "actors_sql"
            ids = sorted(x["distinct_ids"][0] for x in a["results"])
            assert ids == sorted(x["distinct_ids"][0] for x in b["results"])
            want = sorted(u for u, r in reached_of.items() if (r >= step - 1 if step > 0 else r == -step - 2))
            assert ids == want, step


def test_fast_path_ties_window_edge_and_merge(tmp_path, monkeypatch, spy):
    """Hand-made: ties at one timestamp, the window's last second, a later start winning, a merge."""
    w = 3600
    ev = [
        # u1: A, B and C at one instant (steps in order), then nothing: 3 steps, times 0 and 0
        ("u1", "A", 0), ("u1", "B", 0), ("u1", "C", 0),
        # u2: C, A and B at one instant, C stored first: ties are taken in step order, so 3 steps
        ("u2", "C", 10), ("u2", "A", 10), ("u2", "B", 10),
        # u3: B exactly at the window's end, then C one second too late
        ("u3", "A", 0), ("u3", "B", w), ("u3", "C", w + 1),
        # u4: two starts; the later one converts to C (the earlier one's window ends first)
        ("u4", "A", 0), ("u4", "B", 100), ("u4", "A", 200), ("u4", "B", 300), ("u4", "C", 3750),
        # u5: only step 2 and 3 events: not in the funnel
        ("u5", "B", 0), ("u5", "C", 1),
        # u6: start only
        ("u6", "A", 5),
    ]
    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": e, "distinct_id": u, "timestamp": (D0 + timedelta(seconds=t)).isoformat()}
                  for u, e, t in ev])
        # anon → u7 merge between A (as anon) and B (as u7)
        s.ingest([{"event": "A", "distinct_id": "anon", "timestamp": (D0 + timedelta(seconds=50)).isoformat()},
                  {"event": "$identify", "distinct_id": "u7", "timestamp": (D0 + timedelta(seconds=60)).isoformat(),
                   "properties": {"$anon_distinct_id": "anon"}},
                  {"event": "B", "distinct_id": "u7", "timestamp": (D0 + timedelta(seconds=70)).isoformat()}])
        query = {"kind": "FunnelsQuery", "series": [{"event": "A"}, {"event": "B"}, {"event": "C"}],
                 "dateRange": RANGE, "funnelsFilter": {"funnelWindowInterval": 1, "funnelWindowIntervalUnit": "hour"}}
        fast, general = run_both(s, query, monkeypatch)
        assert "steps_sql" in spy
        same_steps(fast["results"], general["results"])
        r = fast["results"]
        assert [x["count"] for x in r] == [6, 5, 3]  # u1 u2 u3 u4 u6 u7; u1 u2 u3 u4 u7; u1 u2 u4
        # step 2 times: u1 0, u2 0, u3 3600, u4 100 (start 200 → B 300), u7 20
        assert r[1]["average_conversion_time"] == pytest.approx((0 + 0 + 3600 + 100 + 20) / 5)
        assert r[1]["median_conversion_time"] == 20
        # step 3 times: u1 0, u2 0, u4 3450
        assert r[2]["average_conversion_time"] == pytest.approx(3450 / 3)
        assert r[2]["median_conversion_time"] == 0

        # a range without events: the same all-zero steps as the general builder
        empty = dict(query, dateRange={"date_from": "2023-01-01", "date_to": "2023-01-31"})
        fast, general = run_both(s, empty, monkeypatch)
        assert fast == general and [x["count"] for x in fast["results"]] == [0, 0, 0]


def test_general_path_keeps_what_the_fast_path_does_not_cover(tmp_path, spy):
    """Repeated step events, strict/unordered, exclusions, breakdowns, trends: the general builder."""
    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": e, "distinct_id": "u", "timestamp": (D0 + timedelta(seconds=t)).isoformat(),
                   "properties": {"b": "x"}} for e, t in (("A", 0), ("B", 10), ("A", 20), ("C", 30))])
        base = {"kind": "FunnelsQuery", "dateRange": RANGE}
        abc = [{"event": "A"}, {"event": "B"}, {"event": "C"}]
        cases = [
            {"series": [{"event": "A"}, {"event": "A"}]},
            {"series": abc, "funnelsFilter": {"funnelOrderType": "strict"}},
            {"series": abc, "funnelsFilter": {"funnelOrderType": "unordered"}},
            {"series": abc, "funnelsFilter": {"exclusions": [{"event": "X", "funnelFromStep": 0, "funnelToStep": 1}]}},
            {"series": abc, "breakdownFilter": {"breakdown": "b", "breakdown_type": "event"}},
            {"series": abc, "funnelsFilter": {"funnelVizType": "trends"}},
        ]
        for case in cases:
            s.query(base | case)
        assert spy == []
        s.query(base | {"series": abc})
        assert spy == ["steps_sql"]


def test_fast_path_for_group_actors_and_person_filters(tmp_path, monkeypatch, spy):
    """Actors that are groups (events of different persons add up), and a step with a person filter."""
    rows = [("u1", "A", 0, "c1"), ("u2", "B", 60, "c1"), ("u3", "A", 0, "c2"), ("u3", "C", 30, "c2"),
            ("u4", "B", 10, "c3"), ("u5", "A", 20, "c3"), ("u5", "B", 40, "c3")]
    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": "$identify", "distinct_id": u, "timestamp": (D0 - timedelta(hours=1)).isoformat(),
                   "properties": {"$set": {"plan": "pro" if u in ("u2", "u5") else "free"}}}
                  for u in ("u1", "u2", "u3", "u4", "u5")])
        s.ingest([{"event": e, "distinct_id": u, "timestamp": (D0 + timedelta(seconds=t)).isoformat(),
                   "properties": {"$groups": {"company": c}}} for u, e, t, c in rows])
        query = {"kind": "FunnelsQuery", "series": [{"event": "A"}, {"event": "B"}], "dateRange": RANGE,
                 "aggregation_group_type_index": 0}
        fast, general = run_both(s, query, monkeypatch)
        assert spy == ["steps_sql"]
        same_steps(fast["results"], general["results"])
        # c1: A then B (60 s); c2: A only; c3: B, then A and B (20 s)
        assert [x["count"] for x in fast["results"]] == [3, 2]
        assert fast["results"][1]["average_conversion_time"] == 40

        filtered = {"kind": "FunnelsQuery", "dateRange": RANGE,
                    "series": [{"event": "A"}, {"event": "B", "properties": [
                        {"key": "plan", "value": "pro", "operator": "exact", "type": "person"}]}]}
        fast, general = run_both(s, filtered, monkeypatch)
        same_steps(fast["results"], general["results"])
        # u1, u3, u5 start; u5 (pro) converts; u2 (pro) has no A
        assert [x["count"] for x in fast["results"]] == [3, 1]
        assert spy == ["steps_sql", "steps_sql"]
