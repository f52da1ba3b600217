"""Trends against the spec's vectors and against an independent pandas reference."""

import random
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline
from sightline.errors import InvalidInput

UTC = timezone.utc
NOW = datetime(2024, 1, 2, 12, tzinfo=UTC)
OTHER, NONE = "$$_posthog_breakdown_other_$$", "$$_posthog_breakdown_null_$$"


@pytest.fixture(scope="module")
def vec1(tmp_path_factory, store_engine):
    s = sightline.open(tmp_path_factory.mktemp("t") / "d")
    rows = [("u1", "2024-01-01T10:00:00Z", "s1", 10), ("u1", "2024-01-01T11:00:00Z", "s1", 20),
            ("u2", "2024-01-01T12:00:00Z", "s2", 30), ("u1", "2024-01-02T09:00:00Z", "s3", 40),
            ("u3", "2024-01-02T10:00:00Z", "s4", None)]
    s.ingest([{"event": "$pageview", "distinct_id": d, "timestamp": t,
               "properties": {"$session_id": sid, **({"price": p} if p is not None else {})}}
              for d, t, sid, p in rows])
    yield s
    s.close()


def series(event="$pageview", math="total", **kw):
    return {"kind": "EventsNode", "event": event, "math": math, **kw}


@pytest.mark.parametrize("math, prop, expected", [
    ("total", None, [3, 2]), ("dau", None, [2, 2]), ("unique_session", None, [2, 2]),
    ("sum", "price", [60, 40]), ("avg", "price", [20, 40]), ("min", "price", [10, 40]),
    ("max", "price", [30, 40]), ("median", "price", [20, 40]), ("p90", "price", [28, 40]),
    ("avg_count_per_actor", None, [1.5, 1]), ("max_count_per_actor", None, [2, 1]),
])
def test_spec_vector_1(vec1, math, prop, expected):
    [r] = vec1.query({"kind": "TrendsQuery", "series": [series(math=math, math_property=prop)],
                      "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-02"}})["results"]
    assert r["data"] == expected
    assert r["days"] == ["2024-01-01", "2024-01-02"]
    assert r["count"] == sum(expected)


def test_spec_vector_1_bold_number_counts_distinct_users_over_range(vec1):
    [r] = vec1.query({"kind": "TrendsQuery", "series": [series(math="dau")], "trendsFilter": {"display": "BoldNumber"},
                      "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-02"}})["results"]
    assert r["aggregated_value"] == 3


def test_spec_vector_2_weekly_active(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": "e", "distinct_id": d, "timestamp": t} for d, t in
                  [("u1", "2024-01-01T12:00:00Z"), ("u1", "2024-01-09T12:00:00Z"), ("u2", "2024-01-05T12:00:00Z")]])
        [r] = s.query({"kind": "TrendsQuery", "series": [series("e", "weekly_active")],
                       "dateRange": {"date_from": "2024-01-07", "date_to": "2024-01-12"}})["results"]
        assert r["data"] == [2, 1, 2, 2, 2, 1]


def test_spec_vector_3_formulas_cumulative_smoothing(tmp_path):
    from sightline.query.trends import parse_formula, smooth

    a, b = [2, 0, 3, 0], [1, 0, 0, 2]
    div, add = parse_formula("A/B", 2), parse_formula("a+b", 2)
    assert [div({"A": x, "B": y}) for x, y in zip(a, b)] == [2, 0, 0, 0]
    assert [add({"A": x, "B": y}) for x, y in zip(a, b)] == [3, 0, 3, 2]
    assert smooth([1, 2, 3, 4, 5, 6, 7, 8], 7) == [1, 1, 2, 2, 3, 3, 4, 5]
    with pytest.raises(InvalidInput):
        parse_formula("__import__('os')", 2)
    with pytest.raises(InvalidInput):
        parse_formula("C + 1", 2)
    with sightline.open(tmp_path / "d") as s:
        evs = [("u1", 1), ("u1", 2), ("u2", 2), ("u3", 3)]
        s.ingest([{"event": "e", "distinct_id": d, "timestamp": f"2024-01-0{day}T10:00:00Z"} for d, day in evs])
        q = {"kind": "TrendsQuery", "series": [series("e", "dau")], "trendsFilter": {"display": "ActionsLineGraphCumulative"},
             "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-03"}}
        assert s.query(q)["results"][0]["data"] == [1, 2, 3]
        q = {"kind": "TrendsQuery", "series": [series("e"), series("e", "dau")],
             "trendsFilter": {"formula": "A / B * 100"}, "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-03"}}
        [f] = s.query(q)["results"]
        assert f["label"] == "Formula (A / B * 100)" and f["data"] == [100, 100, 100]


def test_spec_vector_4_breakdown_top_n(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        browsers = ["Chrome"] * 5 + ["Firefox"] * 3 + ["Safari"] * 2 + ["Edge"] + [None]
        s.ingest([{"event": "pv", "distinct_id": f"u{i}", "timestamp": "2024-01-01T10:00:00Z",
                   "properties": {"$browser": b} if b else {}} for i, b in enumerate(browsers)])
        res = s.query({"kind": "TrendsQuery", "series": [series("pv")], "breakdownFilter": {
            "breakdown": "$browser", "breakdown_limit": 2}, "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-01"}})
        got = {r["breakdown_value"]: r["count"] for r in res["results"]}
        assert got == {"Chrome": 5, "Firefox": 3, OTHER: 4}
        assert res["hasMore"] is True
        assert [r["label"] for r in res["results"]] == ["Chrome", "Firefox", "Other"]


def test_compare_to_previous_period(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": "e", "distinct_id": "u", "timestamp": f"2024-01-{d:02d}T10:00:00Z"} for d in (1, 2, 2, 3, 4)])
        res = s.query({"kind": "TrendsQuery", "series": [series("e")], "compareFilter": {"compare": True},
                       "dateRange": {"date_from": "2024-01-03", "date_to": "2024-01-04"}})["results"]
        cur = next(r for r in res if r["compare_label"] == "current")
        prev = next(r for r in res if r["compare_label"] == "previous")
        assert cur["data"] == [1, 1] and prev["data"] == [1, 2] and prev["days"] == ["2024-01-01", "2024-01-02"]


def test_bad_queries_get_precise_errors(vec1):
    for q, attr in [({"kind": "TrendsQuery", "series": []}, "series"),
                    ({"kind": "TrendsQuery", "series": [series(math="sum")]}, "math_property"),
                    ({"kind": "TrendsQuery", "series": [series()], "interval": "fortnight"}, "interval"),
                    ({"kind": "TrendsQuery", "series": [series()], "dateRange": {"date_from": "yesterday"}}, "dateRange"),
                    ({"kind": "Nope"}, None)]:
        with pytest.raises(InvalidInput) as exc:
            vec1.query(q)
        if attr:
            assert attr in (exc.value.attr or "") or attr in exc.value.detail


# -- independent reference over random data -------------------------------------------------
ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]


def make_events(seed: int, n: int):
    rng = random.Random(seed)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    events = []
    for i in range(n):
        user = f"u{rng.randrange(12)}"
        ts = start + timedelta(seconds=rng.randrange(20 * 86400))
        props = {"$browser": rng.choice(["Chrome", "Firefox", "Safari", None]), "$session_id": f"s{rng.randrange(30)}"}
        if rng.random() < 0.7:
            props["price"] = rng.choice([1, 2.5, 10, 99, -3])
        props = {k: v for k, v in props.items() if v is not None}
        events.append({"event": rng.choice(["a", "b"]), "distinct_id": user, "timestamp": ts.isoformat(),
                       "properties": props})
    # identity: some anonymous ids get merged into users
    for j in range(3):
        events.append({"event": "$identify", "distinct_id": f"u{j}", "timestamp": (start + timedelta(days=5)).isoformat(),
                       "properties": {"$anon_distinct_id": f"u{j + 6}"}})
    return events


def reference(events, tz, interval, math, prop, event, date_from, date_to):
    merge = {f"u{j + 6}": f"u{j}" for j in range(3)}
    df = pd.DataFrame([{"event": e["event"], "person": merge.get(e["distinct_id"], e["distinct_id"]),
                        "ts": pd.Timestamp(e["timestamp"]), "price": e["properties"].get("price"),
                        "session": e["properties"].get("$session_id"),
                        "browser": e["properties"].get("$browser")} for e in events])
    df["local"] = df["ts"].dt.tz_convert(tz).dt.tz_localize(None)
    lo, hi = pd.Timestamp(date_from), pd.Timestamp(date_to) + pd.Timedelta(days=1)
    df = df[(df["local"] >= lo) & (df["local"] < hi) & (df["event"] == event)]
    freq = {"day": "D", "hour": "h"}[interval]
    df = df.assign(bucket=df["local"].dt.floor(freq))
    buckets = pd.date_range(lo, hi - pd.Timedelta(seconds=1), freq=freq)
    g = df.groupby("bucket")
    if math == "total":
        s = g.size()
    elif math == "dau":
        s = g["person"].nunique()
    elif math == "unique_session":
        s = g["session"].nunique()
    elif math in ("sum", "avg", "min", "max", "median", "p90"):
        col = g["price"]
        s = {"sum": col.sum, "avg": col.mean, "min": col.min, "max": col.max,
             "median": col.median, "p90": lambda: col.quantile(0.9)}[math]()
    elif math == "avg_count_per_actor":
        s = df.groupby(["bucket", "person"]).size().groupby("bucket").mean()
    s = s.reindex(buckets).fillna(0)
    return [float(x) for x in s.values]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), tz=st.sampled_from(ZONES),
       math=st.sampled_from(["total", "dau", "unique_session", "sum", "avg", "min", "max", "median", "p90",
                             "avg_count_per_actor"]),
       interval=st.sampled_from(["day", "day", "hour"]))
def test_trends_match_pandas_reference(tmp_path_factory, seed, tz, math, interval):
    events = make_events(seed, 300)
    d = tmp_path_factory.mktemp("ref") / "d"
    with sightline.open(d) as s:
        s.meta.update_project(s.project.id, timezone_name=tz)
        s.ingest(events)
        date_from, date_to = ("2024-03-03", "2024-03-12") if interval == "day" else ("2024-03-05", "2024-03-06")
        prop = "price" if math in ("sum", "avg", "min", "max", "median", "p90") else None
        [r] = s.query({"kind": "TrendsQuery", "interval": interval, "series": [series("a", math, math_property=prop)],
                       "dateRange": {"date_from": date_from, "date_to": date_to}})["results"]
    expected = reference(events, tz, interval, math, prop, "a", date_from, date_to)
    assert len(r["data"]) == len(expected)
    assert r["data"] == pytest.approx(expected, abs=1e-9)


def test_breakdown_matches_reference_with_other(tmp_path):
    events = make_events(7, 500)
    with sightline.open(tmp_path / "d") as s:
        s.ingest(events)
        res = s.query({"kind": "TrendsQuery", "series": [series("b", "dau")], "breakdownFilter": {
            "breakdown": "$browser", "breakdown_limit": 2}, "dateRange": {"date_from": "2024-03-01", "date_to": "2024-03-21"}})
    got = {r["breakdown_value"]: r["data"] for r in res["results"]}
    # reference: per-value daily uniques; top 2 by total, the rest summed into Other
    merge = {f"u{j + 6}": f"u{j}" for j in range(3)}
    per = {}
    for e in events:
        if e["event"] != "b":
            continue
        bv = e["properties"].get("$browser") or NONE
        day = e["timestamp"][:10]
        per.setdefault(bv, {}).setdefault(day, set()).add(merge.get(e["distinct_id"], e["distinct_id"]))
    days = [(datetime(2024, 3, 1) + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(21)]
    series_by = {bv: [len(per[bv].get(d, ())) for d in days] for bv in per}
    ranked = sorted(series_by, key=lambda bv: (bv == NONE, -sum(series_by[bv]), bv))
    expected = {bv: series_by[bv] for bv in ranked[:2]}
    expected[OTHER] = [sum(series_by[bv][i] for bv in ranked[2:]) for i in range(21)]
    assert got == expected


def test_session_property_filter_and_breakdown(tmp_path):
    rows = [("u1", "s1", 0, "/a"), ("u1", "s1", 30, "/b"), ("u2", "s2", 0, "/a"), ("u2", "s3", 3600, "/c")]
    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": "$pageview", "distinct_id": u, "timestamp": (datetime(2024, 1, 1, 10, tzinfo=UTC)
                   + timedelta(seconds=sec)).isoformat(), "properties": {"$session_id": sid, "$current_url": f"https://x.io{p}"}}
                  for u, sid, sec, p in rows])
        base = {"kind": "TrendsQuery", "series": [{"event": "$pageview"}], "trendsFilter": {"display": "BoldNumber"},
                "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-01"}}
        long = s.query({**base, "properties": [{"type": "session", "key": "$session_duration", "operator": "gt", "value": 10}]})
        assert long["results"][0]["aggregated_value"] == 2  # both pageviews of s1 (30 s)
        by_entry = s.query({**base, "breakdownFilter": {"breakdown_type": "session", "breakdown": "$entry_pathname"}})
        assert {r["breakdown_value"]: r["aggregated_value"] for r in by_entry["results"]} == {"/a": 3, "/c": 1}
        with pytest.raises(InvalidInput):
            s.query({**base, "properties": [{"type": "session", "key": "nope", "value": 1}]})


def test_daylight_saving_days_and_hours(tmp_path):
    # New York springs forward on 2024-03-10 (02:00 → 03:00): that day has 23 hours
    local = ["2024-03-09T23:30:00-05:00", "2024-03-10T00:30:00-05:00", "2024-03-10T01:59:00-05:00",
             "2024-03-10T03:01:00-04:00", "2024-03-10T23:59:00-04:00", "2024-03-11T00:01:00-04:00"]
    with sightline.open(tmp_path / "d") as s:
        s.meta.update_project(s.project.id, timezone_name="America/New_York")
        s.ingest([{"event": "e", "distinct_id": "u", "timestamp": t} for t in local])
        [day] = s.query({"kind": "TrendsQuery", "series": [{"event": "e"}],
                         "dateRange": {"date_from": "2024-03-09", "date_to": "2024-03-11"}})["results"]
        assert day["days"] == ["2024-03-09", "2024-03-10", "2024-03-11"] and day["data"] == [1, 4, 1]
        [hour] = s.query({"kind": "TrendsQuery", "series": [{"event": "e"}], "interval": "hour",
                          "dateRange": {"date_from": "2024-03-10", "date_to": "2024-03-10"}})["results"]
        assert hour["days"][:4] == ["2024-03-10 00:00:00", "2024-03-10 01:00:00", "2024-03-10 02:00:00",
                                    "2024-03-10 03:00:00"]
        got = dict(zip(hour["days"], hour["data"]))
        assert got["2024-03-10 00:00:00"] == 1 and got["2024-03-10 01:00:00"] == 1
        assert got["2024-03-10 02:00:00"] == 0 and got["2024-03-10 03:00:00"] == 1 and got["2024-03-10 23:00:00"] == 1


def test_insight_queries_have_a_time_limit(tmp_path):
    from sightline.ingest.bulk import import_events

    with sightline.open(tmp_path / "d") as s:
        base = datetime(2024, 1, 1, tzinfo=UTC)
        import_events(s, ({"event": "e", "distinct_id": f"u{i % 5000}", "timestamp": base + timedelta(seconds=i)}
                          for i in range(150_000)), progress=False)
        funnel = {"kind": "FunnelsQuery", "series": [{"event": "e"}] * 5,
                  "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-03"}}
        s.meta.update_project(s.project.id, settings={"query_timeout_seconds": 0.01})
        errors = []
        for _ in range(3):  # the funnel takes ~0.2 s; an interrupt landing before it starts is missed
            try:
                s.query(funnel)
            except InvalidInput as exc:
                errors.append(exc)
                break
        assert errors and errors[0].status == 408 and errors[0].code == "query_timeout"
        s.meta.update_project(s.project.id, settings={"query_timeout_seconds": 60})
        assert s.query(funnel)["results"][0]["count"] == 5000
