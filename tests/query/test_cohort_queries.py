"""Retention, lifecycle and stickiness: the spec's vectors and plain-Python references."""

import random
from datetime import timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline

UTC = timezone.utc


@pytest.fixture
def db(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        yield s


def send(s, rows):
    s.ingest([{"event": e, "distinct_id": u, "timestamp": t} for u, e, t in rows])


def day(d, h=12):
    return f"2024-01-{d:02d}T{h:02d}:00:00Z"


RET = {"period": "Day", "totalIntervals": 3}


def retention(s, **rf):
    res = s.query({"kind": "RetentionQuery", "dateRange": {"date_to": "2024-01-03"},
                   "retentionFilter": {**RET, **rf}})["results"]
    return [[v["count"] for v in row["values"]] for row in res], [row["date"][:10] for row in res]


def test_retention_vectors(db):
    send(db, [("u1", "pv", day(1)), ("u1", "pv", day(2)), ("u2", "pv", day(1)), ("u2", "pv", day(3)),
              ("u3", "pv", day(2)), ("u3", "pv", day(3))])
    ent = {"targetEntity": {"id": "pv"}, "returningEntity": {"id": "pv"}}
    rows, dates = retention(db, **ent)
    assert dates == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert rows == [[2, 1, 1], [2, 1, 0], [2, 0, 0]]
    rows, _ = retention(db, retentionType="retention_first_time", **ent)
    assert rows == [[2, 1, 1], [1, 1, 0], [0, 0, 0]]
    rows, _ = retention(db, retentionType="retention_first_time", cumulative=True, **ent)
    assert rows[0] == [2, 2, 1]


def test_retention_period_zero_needs_no_return(db):
    send(db, [("u", "signup", day(1)), ("u", "purchase", day(1, 13)), ("u", "purchase", day(3))])
    rows, _ = retention(db, targetEntity={"id": "signup"}, returningEntity={"id": "purchase"})
    assert rows[0] == [1, 0, 1]


def test_lifecycle_vector(db):
    # u2 was created long before: its first event sets created_at, so send it first
    send(db, [("u2", "other", "2023-12-01T00:00:00Z"), ("u1", "pv", day(2)), ("u1", "pv", day(3)),
              ("u2", "pv", day(2)), ("u2", "pv", day(4))])
    res = db.query({"kind": "LifecycleQuery", "series": [{"event": "pv"}],
                    "dateRange": {"date_from": "2024-01-02", "date_to": "2024-01-04"}})["results"]
    got = {r["status"]: r["data"] for r in res}
    assert got == {"new": [1, 0, 0], "returning": [0, 1, 0], "resurrecting": [1, 0, 1], "dormant": [0, -1, -1]}


def test_stickiness_vector(db):
    send(db, [("u1", "pv", day(1)), ("u1", "pv", day(2)), ("u1", "pv", day(4)), ("u2", "pv", day(3)),
              ("u3", "pv", day(1)), ("u3", "pv", day(1, 13))])
    q = {"kind": "StickinessQuery", "series": [{"event": "pv"}], "dateRange": {"date_from": "2024-01-01", "date_to": "2024-01-05"}}
    [r] = db.query(q)["results"]
    assert r["data"] == [2, 0, 1, 0, 0] and r["count"] == 3 and r["labels"][1] == "2 days"
    [r] = db.query({**q, "stickinessFilter": {"computedAs": "cumulative"}})["results"]
    assert r["data"] == [3, 1, 1, 0, 0]
    [r] = db.query({**q, "stickinessFilter": {"stickinessCriteria": {"operator": "gte", "value": 2}}})["results"]
    assert r["data"] == [1, 0, 0, 0, 0]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000), kind=st.sampled_from(["retention_recurring", "retention_first_time"]))
def test_retention_matches_reference(tmp_path_factory, seed, kind):
    rng = random.Random(seed)
    acts = {(f"u{rng.randrange(20)}", rng.choice(["a", "b"]), rng.randrange(1, 11)) for _ in range(150)}
    n = 7
    first_day = 11 - n  # date_to 01-10 → rows 01-04 .. 01-10
    with sightline.open(tmp_path_factory.mktemp("r") / "d") as s:
        send(s, [(u, e, day(d)) for u, e, d in sorted(acts, key=lambda x: x[2])])
        res = s.query({"kind": "RetentionQuery", "dateRange": {"date_to": "2024-01-10"},
                       "retentionFilter": {"period": "Day", "totalIntervals": n, "retentionType": kind,
                                           "targetEntity": {"id": "a"}, "returningEntity": {"id": "b"}}})["results"]
    got = [[v["count"] for v in row["values"]] for row in res]
    users = {u for u, _, _ in acts}
    expected = []
    for i in range(n):
        cohort_day = first_day + i
        if kind == "retention_recurring":
            members = {u for u in users if (u, "a", cohort_day) in acts}
        else:
            members = {u for u in users if min([d for uu, e, d in acts if uu == u and e == "a"] or [99]) == cohort_day}
        row = [len(members)]
        for k in range(1, n):
            row.append(0 if i + k >= n else sum(1 for u in members if (u, "b", cohort_day + k) in acts))
        expected.append(row)
    assert got == expected


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000))
def test_lifecycle_and_stickiness_match_reference(tmp_path_factory, seed):
    rng = random.Random(seed)
    acts = sorted({(f"u{rng.randrange(15)}", rng.randrange(1, 15)) for _ in range(80)}, key=lambda x: x[1])
    with sightline.open(tmp_path_factory.mktemp("l") / "d") as s:
        send(s, [(u, "pv", day(d)) for u, d in acts])
        res = s.query({"kind": "LifecycleQuery", "series": [{"event": "pv"}],
                       "dateRange": {"date_from": "2024-01-05", "date_to": "2024-01-10"}})["results"]
        [st_] = s.query({"kind": "StickinessQuery", "series": [{"event": "pv"}],
                         "dateRange": {"date_from": "2024-01-05", "date_to": "2024-01-10"}})["results"]
    got = {r["status"]: r["data"] for r in res}
    days = {}
    for u, d in acts:
        days.setdefault(u, set()).add(d)
    exp = {k: [0] * 6 for k in ("new", "returning", "resurrecting", "dormant")}
    for u, ds in days.items():
        created = min(ds)  # persons are created by their first event
        active = sorted(x for x in ds if 4 <= x <= 11)
        for j, a in enumerate(active):
            prev = created if j == 0 else active[j - 1]
            status = "new" if (j == 0 and prev == a) else ("returning" if j != 0 and a - 1 == prev else "resurrecting")
            if 5 <= a <= 10:
                exp[status][a - 5] += 1
            nxt = active[j + 1] if j + 1 < len(active) else None
            if nxt != a + 1 and 5 <= a + 1 <= 10:
                exp["dormant"][a + 1 - 5] -= 1
    assert got == exp
    counts = [len([x for x in ds if 5 <= x <= 10]) for ds in days.values()]
    assert st_["data"] == [sum(1 for c in counts if c == k) for k in range(1, 7)]


def test_retention_breakdown_needs_the_same_value_on_start_and_return(db):
    db.ingest([{"event": "pv", "distinct_id": u, "timestamp": day(d), "properties": {"plan": plan}}
               for u, d, plan in [("u1", 1, "pro"), ("u1", 2, "pro"), ("u2", 1, "free"), ("u2", 2, "pro"),
                                  ("u3", 1, "free"), ("u3", 3, "free")]])
    res = db.query({"kind": "RetentionQuery", "dateRange": {"date_to": "2024-01-03"},
                    "retentionFilter": {**RET, "targetEntity": {"id": "pv"}, "returningEntity": {"id": "pv"}},
                    "breakdownFilter": {"breakdown": "plan"}})["results"]
    rows = {(r["breakdown_value"], r["date"][:10]): [v["count"] for v in r["values"]] for r in res}
    assert rows[("pro", "2024-01-01")] == [1, 1, 0]   # u1 came back on a pro event
    assert rows[("free", "2024-01-01")] == [2, 0, 1]  # u2's return was "pro": not counted; u3 on day 3
    assert rows[("pro", "2024-01-02")] == [2, 0, 0]
