"""The sort-free paths version (sightline/query/paths_fast.py) against the general SQL and a
plain-Python reference: identical edges, counts and average times.

The data is dense in what the fast version reasons about: events of one person at the same
timestamp (ordered by uuid), gaps of exactly 30 minutes (to the microsecond), duplicates on both
sides of a session break, persons merged after their events were stored (overrides), rows in the
hot table next to rows in part files, several part files and months, pageviews without a URL."""

from __future__ import annotations

import itertools
import random
import uuid as _uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline
from sightline.query import paths as paths_mod
from sightline.query import paths_fast

T0 = datetime(2024, 1, 31, 22, tzinfo=UTC)        # sessions cross into February
RANGE = {"date_from": "2024-01-29", "date_to": "2024-02-05"}
GAP_US = 30 * 60 * 1_000_000
T0_US = int(T0.timestamp()) * 1_000_000
URLS = ["https://x.com/", "https://x.com/a", "https://x.com/a/", "https://x.com/b", "https://x.com/c/12",
        "https://x.com/c/77", "https://x.com/d"]


def _spy(monkeypatch):
    """Counts the fast version's walks and the actors it hands to the general SQL."""
    calls = {"walk": 0, "problem": 0}
    walk, problem = paths_fast._walk_batches, paths_fast._problem_edges

    def walk_spy(*a, **k):
        calls["walk"] += 1
        return walk(*a, **k)

    def problem_spy(snap, fi, hi):
        calls["problem"] += len(hi)
        return problem(snap, fi, hi)

    monkeypatch.setattr(paths_fast, "_walk_batches", walk_spy)
    monkeypatch.setattr(paths_fast, "_problem_edges", problem_spy)
    return calls


def query(s, rng=RANGE, **pf):
    pf.setdefault("edgeLimit", 1000)
    pf.setdefault("pathReplacements", False)
    return s.query({"kind": "PathsQuery", "dateRange": rng, "pathsFilter": pf})["results"]


def both(s, monkeypatch, rng=RANGE, **pf):
    fast = query(s, rng, **pf)
    monkeypatch.setattr(paths_mod, "FAST_PATHS", False)
    try:
        general = query(s, rng, **pf)
    finally:
        monkeypatch.setattr(paths_mod, "FAST_PATHS", True)
    return fast, general


def event(user, url, us, uid=None, name="$pageview"):
    props = {} if url is None else {"$current_url": url}
    e = {"event": name, "distinct_id": user, "timestamp": (T0 + timedelta(microseconds=us)).isoformat(),
         "properties": props}
    if uid is not None:
        e["uuid"] = uid
    return e


def compact(s):
    """Move every hot row into part files (one new file per month, no merging)."""
    s.sync()
    st_ = s.storage
    s.writer.run_exclusive(lambda _i: st_.compact_parts(datetime.now(UTC), settled_before=datetime.now(UTC)
                                                       + timedelta(hours=1), merge=False))


def reference(rows, limit, base=None):
    """rows: (actor, µs after T0 (or ``base``), uuid, label or None). Edges {(src, dst): (count,
    average ms)}."""
    base = T0_US if base is None else base
    by_actor = defaultdict(list)
    for actor, us, uid, label in rows:
        if label is not None:
            by_actor[actor].append((base + us, uid, label))
    acc = defaultdict(lambda: [0, 0])
    for items in by_actor.values():
        items.sort(key=lambda x: (x[0], x[1]))
        sessions, cur = [], []
        for i, it in enumerate(items):
            if cur and it[0] / 1e6 - cur[-1][0] / 1e6 >= 30 * 60:  # SQL: epoch seconds as doubles
                sessions.append(cur)
                cur = []
            cur.append(it)
        sessions.append(cur)
        for sess in sessions:
            kept = [x for i, x in enumerate(sess) if i + 1 == len(sess) or sess[i + 1][2] != x[2]][:limit]
            for i in range(len(kept) - 1):
                a = acc[(f"{i + 1}_{kept[i][2]}", f"{i + 2}_{kept[i + 1][2]}")]
                a[0] += 1
                a[1] += kept[i + 1][0] // 1000 - kept[i][0] // 1000
    return {k: (c, s / c) for k, (c, s) in acc.items()}


def as_map(results):
    return {(e["source"], e["target"]): (e["value"], e["average_conversion_time"]) for e in results}


def label_of(url):
    if url is None:
        return None
    return url[:-1] if len(url) > 1 and url.endswith("/") else url


def gen_events(rng: random.Random, users: int, per_user: int):
    """Events plus what the reference needs: (distinct_id, µs, uuid, label)."""
    events, rows = [], []
    for u in range(users):
        us = rng.randrange(0, 3_600_000_000)
        for _ in range(rng.randrange(1, per_user)):
            step = rng.choice([0, 0, 1, 999, 1000, 60_000_000, 10 * 60_000_000, GAP_US - 1, GAP_US, GAP_US + 1,
                               GAP_US * 3, 29 * 60_000_000 + 999_999])
            us += step
            url = rng.choice(URLS + [URLS[1], URLS[1], None])
            uid = str(_uuid.UUID(int=rng.getrandbits(128)))
            events.append(event(f"u{u}", url, us, uid))
            rows.append((f"u{u}", us, uid, label_of(url)))
    return events, rows


def test_fast_version_runs_and_agrees_on_parts_and_hot_rows(tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    rng = random.Random(11)
    events, rows = gen_events(rng, 40, 25)
    third = len(events) // 3
    with sightline.open(tmp_path / "d") as s:
        s.ingest(events[:third])
        compact(s)
        s.ingest(events[third:2 * third])
        compact(s)
        s.ingest(events[2 * third:])              # these stay hot
        files = s.storage.part_files()
        assert len(files) >= 4                   # two compactions × two months
        assert s.storage.execute("SELECT count(*) FROM events_hot").rows[0][0] > 0
        for limit in (2, 3, 5, 7):
            fast, general = both(s, monkeypatch, stepLimit=limit)
            assert fast == general
            assert as_map(fast) == reference([(u, us, uid, lab) for u, us, uid, lab in rows], limit)
    assert calls["walk"] >= 4


def test_hot_rows_after_part_rows_need_no_sql(tmp_path, monkeypatch):
    """The newest rows of a person are hot (in arrival order), the older ones in parts: the scan
    reads the hot rows first, the fast version sorts them and puts them last, and nobody goes
    through the general SQL."""
    calls = _spy(monkeypatch)
    rng = random.Random(8)
    old, new, rows = [], [], []
    for u in range(15):
        us = rng.randrange(0, 1_000_000)
        for i in range(12):
            us += rng.choice([1, 1000, 60_000_000, GAP_US - 1, GAP_US, 3 * GAP_US])
            url = rng.choice(URLS)
            (old if i < 7 else new).append(event(f"u{u}", url, us))
            rows.append((f"u{u}", us, "", label_of(url)))
    rng.shuffle(new)  # arrival order: the hot table holds an actor's rows apart, out of time order
    with sightline.open(tmp_path / "d") as s:
        s.ingest(old)
        compact(s)
        s.ingest(new)
        assert s.storage.execute("SELECT count(*) FROM events_hot").rows[0][0] == len(new)
        for limit in (3, 6):
            fast, general = both(s, monkeypatch, stepLimit=limit)
            assert fast == general and as_map(fast) == reference(rows, limit)
    assert calls["walk"] == 2 and calls["problem"] == 0


def test_ties_are_ordered_by_uuid(tmp_path, monkeypatch):
    """Events of one person at the same instant: the uuid decides their order, in part files too."""
    calls = _spy(monkeypatch)
    evs, rows = [], []
    for u in range(6):
        for i, url in enumerate(["https://x.com/a", "https://x.com/b", "https://x.com/c/1", "https://x.com/d"]):
            uid = str(_uuid.UUID(int=(u * 100 + (7 * i) % 4 + 1) << 64))
            evs.append(event(f"t{u}", url, 5_000_000 * (i // 2), uid))   # pairs share a timestamp
            rows.append((f"t{u}", 5_000_000 * (i // 2), uid, url))
    with sightline.open(tmp_path / "d") as s:
        s.ingest(evs)
        compact(s)
        fast, general = both(s, monkeypatch)
        assert fast == general and as_map(fast) == reference(rows, 5)
    assert calls["walk"] >= 1 and calls["problem"] >= 1   # tied actors go through SQL


def test_exact_gap_and_duplicates_across_a_break(tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    base = 1_234_567  # µs: the doubles of the two instants need not differ by exactly 1800 s
    evs = [event("g", "https://x.com/a", base), event("g", "https://x.com/b", base + 1),
           event("g", "https://x.com/b", base + 1 + GAP_US),            # exactly 30 min: a new session
           event("g", "https://x.com/c", base + 2 + GAP_US),
           event("h", "https://x.com/a", base), event("h", "https://x.com/a", base + GAP_US - 1),
           event("h", "https://x.com/b", base + 2 * GAP_US - 1)]
    with sightline.open(tmp_path / "d") as s:
        s.ingest(evs)
        compact(s)
        fast, general = both(s, monkeypatch)
        assert fast == general
        got = as_map(fast)
        assert got[("1_https://x.com/b", "2_https://x.com/c")][0] == 1
        assert ("1_https://x.com/a", "2_https://x.com/b") in got
    assert calls["walk"] >= 1 and calls["problem"] == 0


def test_merged_persons_use_the_override(tmp_path, monkeypatch):
    """Persons merged after their events were stored: the old person's rows belong to the new
    actor (the override), wherever they are stored."""
    calls = _spy(monkeypatch)
    evs = []
    for u in range(5):
        evs += [event(f"anon{u}", "https://x.com/a", 1_000_000 * u), event(f"anon{u}", "https://x.com/b", 1_000_000 * u + 10),
                event(f"user{u}", "https://x.com/c/5", 1_000_000 * u + 20_000_000),
                event(f"user{u}", "https://x.com/d", 1_000_000 * u + 30_000_000)]
    with sightline.open(tmp_path / "d") as s:
        s.ingest(evs)
        compact(s)
        s.ingest([{"event": "$identify", "distinct_id": f"user{u}", "timestamp": (T0 + timedelta(minutes=5)).isoformat(),
                   "properties": {"$anon_distinct_id": f"anon{u}"}} for u in range(3)])
        s.sync()
        n = s.storage.execute("SELECT count(*) FROM person_overrides").rows[0][0]
        assert n == 3
        fast, general = both(s, monkeypatch, pathReplacements=True)
        assert fast == general
        got = as_map(fast)
        assert got[("2_https://x.com/b", "3_https://x.com/c/:id")][0] == 3   # merged: one path of four
        assert got[("1_https://x.com/c/:id", "2_https://x.com/d")][0] == 2   # not merged
    assert calls["walk"] >= 1


@pytest.mark.parametrize("pf", [
    {"pathReplacements": True},
    {"localPathCleaningFilters": [{"regex": "/c/.*", "alias": "/c/*"}]},
    {"excludeEvents": ["https://x.com/b"]},
    {"stepLimit": 2},
    {"includeEventTypes": ["$pageview", "custom_event"]},
    {"includeEventTypes": ["custom_event"]},
    {"minEdgeWeight": 2},
])
def test_filters_agree(tmp_path_factory, monkeypatch, pf):
    calls = _spy(monkeypatch)
    rng = random.Random(5)
    events, _ = gen_events(rng, 25, 20)
    events += [event(f"u{i % 25}", None, 100 + 60_000_000 * i, name=rng.choice(["signed_up", "clicked", "paid"]))
               for i in range(100)]
    with sightline.open(tmp_path_factory.mktemp("f") / "d") as s:
        s.ingest(events[: len(events) // 2])
        compact(s)
        s.ingest(events[len(events) // 2:])
        fast, general = both(s, monkeypatch, **pf)
        assert fast == general and fast
    # several event types interleave in the parts (sorted by event first): the general SQL runs
    assert calls["walk"] == (0 if "custom_event" in pf.get("includeEventTypes", []) else 1)


def test_property_filters_and_empty_ranges(tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    rng = random.Random(3)
    events, _ = gen_events(rng, 20, 15)
    for i, e in enumerate(events):
        e["properties"]["$browser"] = "Chrome" if i % 3 else "Safari"
        e["properties"]["plan"] = "pro" if i % 2 else "free"
    with sightline.open(tmp_path / "d") as s:
        s.ingest(events)
        compact(s)
        for props in ([{"key": "$browser", "value": "Chrome", "operator": "exact", "type": "event"}],
                      [{"key": "plan", "value": "pro", "operator": "exact", "type": "event"}]):
            monkeypatch.setattr(paths_mod, "FAST_PATHS", True)
            fast = s.query({"kind": "PathsQuery", "dateRange": RANGE, "properties": props,
                            "pathsFilter": {"edgeLimit": 1000}})["results"]
            assert calls["walk"] == 1
            monkeypatch.setattr(paths_mod, "FAST_PATHS", False)
            general = s.query({"kind": "PathsQuery", "dateRange": RANGE, "properties": props,
                               "pathsFilter": {"edgeLimit": 1000}})["results"]
            monkeypatch.setattr(paths_mod, "FAST_PATHS", True)
            assert fast == general and fast
            calls["walk"] = 0
        fast, general = both(s, monkeypatch, rng={"date_from": "2023-01-01", "date_to": "2023-01-05"})
        assert fast == general == []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000), limit=st.integers(2, 6), split=st.integers(0, 3))
def test_random_layouts_match_reference(tmp_path_factory, monkeypatch, seed, limit, split):
    rng = random.Random(seed)
    events, rows = gen_events(rng, rng.randrange(1, 12), rng.randrange(2, 20))
    with sightline.open(tmp_path_factory.mktemp("h") / "d") as s:
        cuts = sorted(rng.randrange(0, len(events) + 1) for _ in range(split))
        prev = 0
        for c in cuts:
            s.ingest(events[prev:c])
            compact(s)
            prev = c
        s.ingest(events[prev:])
        fast, general = both(s, monkeypatch, stepLimit=limit)
        assert fast == general
        assert as_map(fast) == reference(rows, limit)


@pytest.mark.parametrize("heads_per_slice", [1 << 17, 3])
def test_walk_on_arrays_against_reference(monkeypatch, heads_per_slice):
    """_walk alone on synthetic runs: two 'files' whose runs interleave per actor, exactly like a
    scan of time-ordered part files, with duplicates and gaps at the file boundary; the session
    heads walked in one slice or in many."""
    import numpy as np

    monkeypatch.setattr(paths_fast, "WALK_SLICE", heads_per_slice)

    rng = random.Random(2)
    actors = [((i * 7919) % 97 + 1, i) for i in range(30)]  # (hi, lo)
    rows = []   # (hi, lo, t, label)
    for hi, lo in actors:
        t = 0
        for _ in range(rng.randrange(1, 12)):
            t += rng.choice([1, 5, 1_000, GAP_US, GAP_US - 1, 2 * GAP_US])
            rows.append((hi, lo, t, rng.randrange(3)))
    cut = max(r[2] for r in rows) // 2
    scan = []
    for part in (lambda r: r[2] < cut, lambda r: r[2] >= cut):
        scan += sorted((r for r in rows if part(r)), key=lambda r: (r[0], r[1], r[2]))
    a = np.array([r[0] for r in scan], dtype=np.uint64)
    b = np.array([r[1] for r in scan], dtype=np.uint64)
    t = np.array([r[2] for r in scan], dtype=np.int64)
    lab = np.array([r[3] for r in scan], dtype=np.int16)
    for limit in (2, 4, 6):
        counts, sums, problem = paths_fast._walk(a, b, t, lab, limit, 3)
        assert len(problem) == 0
        got = {(f"{k}_{x}", f"{k + 1}_{y}"): (c, sums[(k, x, y)] / c) for (k, x, y), c in counts.items()}
        ref = reference([((hi, lo), us, "", str(label)) for hi, lo, us, label in rows], limit, base=0)
        assert got == ref


def test_batches_split_anywhere_give_the_same_edges():
    """DuckDB hands the rows over in batches: splitting the scan anywhere (inside a run, right
    at a run start, batches without a run start, empty batches, rows without a label, a hot
    head) changes nothing."""
    import numpy as np

    rng = random.Random(4)
    scan = []
    for part in range(3):
        rows = []
        for actor in range(12):
            t = part * 10 * GAP_US + rng.randrange(1000)
            for _ in range(rng.randrange(0, 9)):
                t += rng.choice([1, 999, 60_000_000, GAP_US, GAP_US - 1])
                rows.append((actor + 1, actor * 3, t, rng.choice([0, 1, 2, -1])))
        scan += sorted(rows, key=lambda r: (r[0], r[2]))
    a = np.array([r[0] for r in scan], dtype=np.uint64)
    b = np.array([r[1] for r in scan], dtype=np.uint64)
    t = np.array([r[2] for r in scan], dtype=np.int64)
    lab = np.array([r[3] for r in scan], dtype=np.int16)
    lo, hi = int(t.min()), int(t.max())
    keep = lab >= 0
    whole = paths_fast._walk_batches([(a[keep], b[keep], t[keep], lab[keep])], 4, 3, lo=lo, hi=hi)
    assert whole[0]
    for trial in range(30):
        cuts = sorted({0, len(t), *(rng.randrange(len(t) + 1) for _ in range(rng.randrange(1, 8)))})
        batches = [(a[i:j], b[i:j], t[i:j], lab[i:j]) for i, j in itertools.pairwise(cuts)]
        got = paths_fast._walk_batches(iter(batches), 4, 3, dropped=True, lo=lo, hi=hi,
                                       capacity=rng.choice([0, 5, len(t)]))
        assert got[0] == whole[0] and got[1] == whole[1] and len(got[2]) == 0


def test_engine_errors_fall_back_and_timeouts_are_408(tmp_path, monkeypatch):
    """A DuckDB error inside the fast version: the general SQL answers; the fast version's own
    time limit (its statements run on a cursor of their own): the usual 408."""
    import duckdb

    from sightline.errors import InvalidInput

    rng = random.Random(9)
    events, _ = gen_events(rng, 10, 10)
    with sightline.open(tmp_path / "d") as s:
        s.ingest(events)
        compact(s)
        expected = query(s)
        assert expected

        def broken(snap, fi):
            raise duckdb.ConversionException("boom")

        monkeypatch.setattr(paths_fast, "_edges", broken)
        assert query(s) == expected

        def too_slow(snap, fi):
            snap.timed_out.set()
            raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")

        monkeypatch.setattr(paths_fast, "_edges", too_slow)
        with pytest.raises(InvalidInput) as err:
            query(s)
        assert err.value.status == 408 and err.value.code == "query_timeout"


def test_values_cache_bounded(tmp_path, monkeypatch):
    """The per-file values cache keeps at most MAX_CACHED_VALUES values: files evicted are read
    again; a file with too many values is not cached and the query reads the values itself."""
    calls = _spy(monkeypatch)
    rng = random.Random(12)
    events, rows = gen_events(rng, 12, 12)
    with sightline.open(tmp_path / "d") as s:
        for part in (events[:40], events[40:80], events[80:]):
            s.ingest(part)
            compact(s)
        monkeypatch.setattr(paths_fast, "MAX_CACHED_VALUES", 1)
        for _ in range(2):
            assert as_map(query(s)) == reference(rows, 5)
        monkeypatch.setattr(paths_fast, "MAX_FILE_VALUES", 1)
        paths_fast._VALUES.clear()
        fast, general = both(s, monkeypatch)
        assert fast == general and as_map(fast) == reference(rows, 5)
    assert calls["walk"] == 3
