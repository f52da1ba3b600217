#!/usr/bin/env python
"""Query latency benchmark: insights over a synthetic product, through ``core.query(...)``.

For each size (``--events``, or every entry of ``--sizes``):

1. **Data**: a deterministic synthetic product is generated with numpy (vectorized; seconds,
   not minutes) and written as one Parquet file (columns ``event``, ``distinct_id``,
   ``timestamp`` (timestamp[us, UTC]), ``properties`` (JSON text), ``uuid``), sorted by time
   like an export. Persons have power-law activity; ``$pageview`` events come in sessions
   (landing page first, ~50 URLs, some with numeric ids that path cleaning folds), with
   weekly and daily seasonality; ``signed_up`` → ``activated`` → ``invited`` → ``upgraded``
   and ``signed_up`` → ``purchase`` (with ``amount``) follow each other in time, so funnels
   convert 5–40 % per step. The file is bulk-loaded with
   :func:`sightline.ingest.bulk.import_files` into a fresh data directory (load time and
   events/s are printed).
2. **Queries**: trends (DAU by day, breakdown by ``$browser``), a 3-step and a 5-step funnel
   (14-day window), 8-week retention (``signed_up`` → ``$pageview``), lifecycle
   (``$pageview``, day) and paths (``$pageview``, default step limit) — each through
   ``core.query(...)`` (what the HTTP API calls), one warm-up then ``--repeat`` timed runs;
   median and p90 are printed, with the share spent inside DuckDB.
   With ``--store chdb`` the loaded data is then copied into a chdb (in-process ClickHouse)
   store with ``sightline migrate`` and the same queries run on it through ``core.query``;
   the summary shows both engines side by side, their ratio, and whether the results agree.
3. **windowFunnel comparison**: the same Parquet file is loaded (not timed) into chdb
   (ClickHouse in-process) as a MergeTree table ordered by ``(distinct_id, timestamp)`` and
   ``windowFunnel(14 days)`` over ``$pageview → signed_up → purchase`` is timed the same way;
   the ratio of medians is printed and the step counts are checked against ours (persons ==
   distinct_ids here: the data has no merges). Then a *head to head* in one process runs our
   funnel (``core.query``) and chdb's alternately, round by round, and prints the median of the
   per-round ratios: both sides see the same machine load, which the separate phases do not.
4. **Memory**: every phase runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own:
   generate + load, the sightline queries, and the chdb comparison.

Run from the repository root::

    .venv/bin/python benchmarks/queries.py --events 1000000 --persons 100000
    .venv/bin/python benchmarks/queries.py --sizes 1000000,10000000 --data-dir /tmp/slbench
    .venv/bin/python benchmarks/queries.py --events 200000 --persons 20000 --repeat 2   # smoke
    .venv/bin/python benchmarks/queries.py --events 1000000 --persons 100000 --store chdb  # both engines

``--data-dir`` keeps the generated file and the loaded data directory in a sub-directory
named after the parameters (events, persons, days, seed, generator version), so a rerun
skips generation and loading. Without it everything lives in a temporary directory.
With ``--sizes``, the persons count scales with the events (``--persons`` is the count at
``--events``), so every size has the same events per person.
``--explain NAME`` prints DuckDB's ``EXPLAIN ANALYZE`` of the SQL behind one query
(``trends_dau_browser``, ``funnel_3``, ``funnel_5``, ``retention_8w``, ``lifecycle``, ``paths``).

Exit code 0 when every query ran (and, if chdb ran, the funnel counts matched); else 1.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

UTC = timezone.utc
GEN_VERSION = 1                     # bump when the generator changes: cached directories are keyed by it
START = datetime(2024, 3, 4, tzinfo=UTC)   # a Monday; data covers [START, START + days)
FUNNEL_WINDOW_DAYS = 14

# -- the synthetic product ---------------------------------------------------------------------
URL_BASE = "https://app.example.com"
STATIC_PATHS = [
    "/", "/pricing", "/features", "/docs", "/docs/getting-started", "/docs/api", "/docs/sdk/python",
    "/docs/sdk/js", "/blog", "/blog/launch-week", "/blog/pricing-update", "/about", "/careers", "/contact",
    "/login", "/signup", "/app", "/app/dashboard", "/app/insights", "/app/insights/new", "/app/settings",
    "/app/settings/billing", "/app/team", "/app/events", "/app/persons", "/app/cohorts",
    "/app/feature-flags", "/app/experiments", "/changelog", "/integrations",
]
ID_PATHS = [f"{prefix}/{n}" for prefix, ids in (
    ("/app/dashboard", (12, 87, 311, 1024, 4096)), ("/app/insights", (7, 58, 442, 2310, 9001)),
    ("/app/persons", (3, 1999, 20481, 77777, 123456)), ("/blog/posts", (1, 2, 15, 16, 23)))
    for n in ids]
URLS = [URL_BASE + p for p in STATIC_PATHS + ID_PATHS]                      # 50 URLs
LANDING = [STATIC_PATHS.index(p) for p in ("/", "/pricing", "/features", "/blog", "/docs",
                                             "/blog/launch-week", "/login", "/docs/getting-started")]
BROWSERS = [("Chrome", .62), ("Safari", .20), ("Firefox", .08), ("Microsoft Edge", .07), ("Samsung Internet", .03)]
OSES = [("Windows", "Desktop", .38), ("Mac OS X", "Desktop", .22), ("iOS", "Mobile", .20),
        ("Android", "Mobile", .16), ("Linux", "Desktop", .04)]
EVENTS = ["$pageview", "signed_up", "activated", "invited", "upgraded", "purchase"]
PV, SIGNED_UP, ACTIVATED, INVITED, UPGRADED, PURCHASE = range(len(EVENTS))
PLANS = ["team", "business", "enterprise"]
INVITEES = [1, 2, 3, 4, 5]
DOW_WEIGHT = [1.0, 1.04, 1.06, 1.02, 0.92, 0.58, 0.52]     # Monday .. Sunday
HOUR_WEIGHT = [0.22, 0.16, 0.12, 0.1, 0.1, 0.14, 0.25, 0.42, 0.64, 0.82, 0.93, 0.98,
               1.0, 0.99, 0.97, 0.95, 0.9, 0.82, 0.72, 0.64, 0.56, 0.47, 0.38, 0.29]
US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S


def _price_points() -> list[float]:
    return [9.0, 12.0, 19.0, 24.0, 29.0, 39.0, 49.0, 59.0, 79.0, 99.0, 129.0, 149.0, 199.0, 249.0, 299.0,
            399.0, 499.0, 9.99, 19.99, 29.99, 49.99, 99.99, 4.5, 7.25, 14.5, 34.0, 44.0, 64.0, 89.0, 119.0,
            179.0, 229.0, 349.0, 599.0, 799.0, 999.0, 1299.0, 1999.0, 2499.0, 4999.0]


def _extra_strings() -> list[str]:
    """The event-specific tail of the properties JSON, one entry per variant."""
    out = [f', "$current_url": "{u}", "$pathname": "{u[len(URL_BASE):]}"' for u in URLS]   # 0..49
    out.append(', "signup_method": "email"')                                                  # signed_up
    out.append(', "onboarding_step": "first_insight"')                                       # activated
    out += [f', "invitee_count": {k}' for k in INVITEES]                                     # invited
    out += [f', "plan": "{p}"' for p in PLANS]                                                # upgraded
    out += [f', "amount": {a}, "currency": "USD"' for a in _price_points()]                   # purchase
    return out


EXTRA_SIGNED_UP = len(URLS)
EXTRA_ACTIVATED = EXTRA_SIGNED_UP + 1
EXTRA_INVITED = EXTRA_ACTIVATED + 1
EXTRA_UPGRADED = EXTRA_INVITED + len(INVITEES)
EXTRA_PURCHASE = EXTRA_UPGRADED + len(PLANS)


def _seasonal_times(rng, lo, hi, shape: float):
    """Times in [lo, hi) (int64 µs arrays), front-loaded by ``shape`` (u ** shape), thinned by the
    weekly and daily seasonality (rejection sampling, vectorized)."""
    import numpy as np

    dow = np.asarray(DOW_WEIGHT)
    hour = np.asarray(HOUR_WEIGHT)
    top = dow.max() * hour.max()
    n = len(lo)
    out = np.empty(n, np.int64)
    pending = np.arange(n)
    span = (hi - lo).astype(np.float64)
    for attempt in range(60):
        if not len(pending):
            break
        u = rng.random(len(pending)) ** shape
        t = lo[pending] + (span[pending] * u).astype(np.int64)
        day = t // US_PER_DAY
        p = dow[(day + 3) % 7] * hour[(t // (3600 * US_PER_S)) % 24] / top   # 1970-01-01 was a Thursday
        ok = rng.random(len(pending)) < p if attempt < 59 else np.ones(len(pending), bool)
        out[pending[ok]] = t[ok]
        pending = pending[~ok]
    return out


def _session_offsets(rng, lengths, mean_gap_s: float):
    """Per event of sessions of the given lengths: (session index, position, µs offset from its start)."""
    import numpy as np

    total = int(lengths.sum())
    sess = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    pos = np.arange(total) - starts[sess]
    gaps = (rng.exponential(mean_gap_s, total) * US_PER_S).astype(np.int64) + 1
    gaps[pos == 0] = 0
    csum = np.cumsum(gaps)
    offset = csum - csum[starts][sess]
    return sess, pos, offset


def _weighted_index(rng, weights, n: int):
    import numpy as np

    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1)


def generate(n_events: int, n_persons: int, days: int, seed: int):
    """The whole dataset as an Arrow table (sorted by timestamp) plus a few facts about it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    P = n_persons
    start = int(START.timestamp()) * US_PER_S
    end = start + days * US_PER_DAY                            # exclusive

    # persons: first seen (uniform over the range, seasonal), power-law activity, browser/os
    t0 = _seasonal_times(rng, np.full(P, start, np.int64), np.full(P, end - 3600 * US_PER_S, np.int64), 1.0)
    activity = np.minimum(rng.pareto(1.2, P) + 1.0, 400.0)
    browser = _weighted_index(rng, np.array([w for _, w in BROWSERS]), P).astype(np.int8)
    os_ = _weighted_index(rng, np.array([w for *_, w in OSES]), P).astype(np.int8)

    # funnel events: each person may sign up; some of those activate → invite → upgrade; some purchase
    def follow(parent_person, parent_ts, p, mean_days):
        take = rng.random(len(parent_person)) < p
        ts = parent_ts[take] + (rng.exponential(mean_days, int(take.sum())) * US_PER_DAY).astype(np.int64) + US_PER_S
        keep = ts < end
        return parent_person[take][keep], ts[keep]

    persons = np.arange(P, dtype=np.int64)
    su_p, su_t = follow(persons, t0 + 120 * US_PER_S, 0.30, 1.5)
    ac_p, ac_t = follow(su_p, su_t, 0.40, 0.8)
    in_p, in_t = follow(ac_p, ac_t, 0.35, 2.0)
    up_p, up_t = follow(in_p, in_t, 0.30, 3.0)
    pu_p, pu_t = follow(su_p, su_t, 0.25, 2.0)
    pu2_p, pu2_t = follow(pu_p, pu_t, 0.30, 5.0)
    f_person = np.concatenate([su_p, ac_p, in_p, up_p, pu_p, pu2_p])
    f_ts = np.concatenate([su_t, ac_t, in_t, up_t, pu_t, pu2_t])
    f_type = np.concatenate([np.full(len(su_p), SIGNED_UP), np.full(len(ac_p), ACTIVATED),
                             np.full(len(in_p), INVITED), np.full(len(up_p), UPGRADED),
                             np.full(len(pu_p) + len(pu2_p), PURCHASE)]).astype(np.int8)
    f_extra = np.concatenate([
        np.full(len(su_p), EXTRA_SIGNED_UP), np.full(len(ac_p), EXTRA_ACTIVATED),
        EXTRA_INVITED + rng.integers(0, len(INVITEES), len(in_p)),
        EXTRA_UPGRADED + _weighted_index(rng, np.array([.7, .25, .05]), len(up_p)),
        EXTRA_PURCHASE + rng.integers(0, len(_price_points()), len(pu_p) + len(pu2_p))]).astype(np.int16)

    # page views, in sessions: every person's first session starts at t0, the rest go by activity
    n_pv = n_events - len(f_person)
    if n_pv < P:
        raise SystemExit(f"{n_events:,} events are too few for {P:,} persons (each needs a page view and "
                         f"{len(f_person):,} funnel events were drawn): raise --events or lower --persons")
    first_len = rng.geometric(0.3, P)
    if first_len.sum() > n_pv:
        first_len[:] = 1
    rest = n_pv - int(first_len.sum())
    lens = []
    while rest > 0:
        chunk = rng.geometric(0.25, max(16, int(rest / 4 * 1.1)))
        csum = np.cumsum(chunk)
        cut = int(np.searchsorted(csum, rest))
        if cut < len(chunk):
            chunk = chunk[:cut + 1].copy()
            chunk[-1] -= int(csum[cut] - rest)
            rest = 0
        else:
            rest -= int(csum[-1])
        lens.append(chunk)
    extra_len = np.concatenate(lens) if lens else np.zeros(0, np.int64)
    extra_len = extra_len[extra_len > 0]
    remaining = (end - t0).astype(np.float64) / US_PER_DAY
    s_person = _weighted_index(rng, activity * (remaining + 1.0), len(extra_len))
    s_start = _seasonal_times(rng, t0[s_person], np.full(len(s_person), end, np.int64), 1.6)
    sess_person = np.concatenate([persons, s_person])
    sess_start = np.concatenate([t0, s_start])
    sess_len = np.concatenate([first_len, extra_len]).astype(np.int64)
    sess, pos, offset = _session_offsets(rng, sess_len, 75.0)
    last_offset = offset[np.cumsum(sess_len) - 1]             # offsets rise within a session
    sess_start = np.minimum(sess_start, end - 1 - last_offset)   # keep whole sessions inside the range
    pv_person = sess_person[sess]
    pv_ts = sess_start[sess] + offset
    url_w = 1.0 / np.arange(1, len(URLS) + 1) ** 0.9
    pv_url = _weighted_index(rng, url_w[rng.permutation(len(URLS))], len(pv_person)).astype(np.int16)
    first = pos == 0
    pv_url[first] = np.asarray(LANDING, np.int16)[_weighted_index(rng, 1.0 / np.arange(1, len(LANDING) + 1),
                                                                  int(first.sum()))]

    person = np.concatenate([pv_person, f_person])
    ts = np.concatenate([pv_ts, f_ts])
    etype = np.concatenate([np.zeros(len(pv_person), np.int8), f_type])
    extra = np.concatenate([pv_url, f_extra])
    del pv_person, pv_ts, pv_url, f_person, f_ts, sess, pos, offset
    order = np.argsort(ts, kind="stable")
    person, ts, etype, extra = person[order], ts[order], etype[order], extra[order]
    del order
    n = len(ts)
    assert n == n_events, (n, n_events)

    # Columns are built dictionary-encoded (Parquet stores them that way anyway; readers see strings):
    # materializing 10M JSON strings in memory would cost more time than everything else here.
    # properties: one JSON text per (browser, os, variant)
    extras = _extra_strings()
    texts = []
    for b, _ in BROWSERS:
        for o, device, _ in OSES:
            for x in extras:
                texts.append(f'{{"$browser": "{b}", "$os": "{o}", "$device_type": "{device}", '
                             f'"$lib": "web"{x}}}')
    code = (browser[person].astype(np.int32) * len(OSES) + os_[person]) * len(extras) + extra
    properties = pa.DictionaryArray.from_arrays(pa.array(code), pa.array(texts, pa.string()))
    del code, extra
    event = pa.DictionaryArray.from_arrays(pa.array(etype.astype(np.int32)), pa.array(EVENTS, pa.string()))
    names = pc.binary_join_element_wise("user_", pc.cast(pa.array(np.arange(P)), pa.string()), "")
    distinct = pa.DictionaryArray.from_arrays(pa.array(person.astype(np.int32)), names)

    # uuids: random v4 with the row number in the last 6 bytes (so they are unique), as text;
    # built in chunks so the temporaries stay small
    hex4 = np.array([f"{i:04x}".encode() for i in range(1 << 16)], dtype="S4").view(np.uint32)
    text = np.empty((n, 9), np.uint32)          # 36 bytes a row: 8 chars, 4 (+ dashes) ..., 12 chars
    dash = np.frombuffer(b"-", np.uint8)[0]
    as_bytes = text.view(np.uint8).reshape(n, 36)
    step_rows = 1 << 20
    for lo in range(0, n, step_rows):
        hi = min(n, lo + step_rows)
        w = rng.integers(0, 1 << 16, (hi - lo, 5), dtype=np.uint16)
        w[:, 3] = (w[:, 3] & 0x0FFF) | 0x4000
        w[:, 4] = (w[:, 4] & 0x3FFF) | 0x8000
        idx = np.arange(lo, hi, dtype=np.uint64)
        g = [hex4[w[:, k]] for k in range(5)] + [
            hex4[((idx >> np.uint64(s_)) & np.uint64(0xFFFF)).astype(np.uint16)] for s_ in (32, 16, 0)]
        block = as_bytes[lo:hi]
        for k, dst in enumerate((0, 4, 9, 14, 19, 24, 28, 32)):   # 8-4-4-4-12 with dashes at 8, 13, 18, 23
            block[:, dst:dst + 4] = g[k].view(np.uint8).reshape(hi - lo, 4)
        block[:, [8, 13, 18, 23]] = dash
    big = n * 36 >= 2 ** 31
    offsets = np.arange(n + 1, dtype=np.int64) * 36
    uuids = pa.Array.from_buffers(pa.large_string() if big else pa.string(), n,
                                  [None, pa.py_buffer(offsets if big else offsets.astype(np.int32)),
                                   pa.py_buffer(as_bytes.reshape(-1))])

    table = pa.table({
        "event": event,
        "distinct_id": distinct,
        "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "properties": properties,
        "uuid": uuids,
    })
    counts = {EVENTS[i]: int(c) for i, c in enumerate(np.bincount(etype, minlength=len(EVENTS)))}
    facts = {"events": n, "persons": P, "days": days, "by_event": counts,
             "max_events_per_person": int(np.bincount(person).max()),
             "start": START.isoformat(), "end": datetime.fromtimestamp(end / US_PER_S, UTC).isoformat()}
    return table, facts


# -- the queries -----------------------------------------------------------------------------------
def queries(days: int) -> list[tuple[str, str, dict]]:
    d_from = START.date().isoformat()
    d_to = (START + timedelta(days=days - 1)).date().isoformat()
    rng = {"date_from": d_from, "date_to": d_to}
    return [
        ("trends_dau_browser", "trends: $pageview DAU per day, breakdown $browser",
         {"kind": "TrendsQuery", "series": [{"event": "$pageview", "math": "dau"}], "interval": "day",
          "dateRange": rng, "breakdownFilter": {"breakdown": "$browser", "breakdown_type": "event"}}),
        ("funnel_3", "funnel: $pageview → signed_up → purchase (14d)",
         {"kind": "FunnelsQuery", "series": [{"event": e} for e in ("$pageview", "signed_up", "purchase")],
          "dateRange": rng, "funnelsFilter": {"funnelWindowInterval": FUNNEL_WINDOW_DAYS,
                                              "funnelWindowIntervalUnit": "day"}}),
        ("funnel_5", "funnel: $pageview → signed_up → activated → invited → upgraded (14d)",
         {"kind": "FunnelsQuery",
          "series": [{"event": e} for e in ("$pageview", "signed_up", "activated", "invited", "upgraded")],
          "dateRange": rng, "funnelsFilter": {"funnelWindowInterval": FUNNEL_WINDOW_DAYS,
                                              "funnelWindowIntervalUnit": "day"}}),
        ("retention_8w", "retention: signed_up → $pageview, 8 weeks",
         {"kind": "RetentionQuery", "dateRange": {"date_to": d_to},
          "retentionFilter": {"period": "Week", "totalIntervals": 8, "targetEntity": {"id": "signed_up"},
                              "returningEntity": {"id": "$pageview"}}}),
        ("lifecycle", "lifecycle: $pageview, day",
         {"kind": "LifecycleQuery", "series": [{"event": "$pageview"}], "interval": "day", "dateRange": rng}),
        ("paths", "paths: $pageview, default step limit",
         {"kind": "PathsQuery", "dateRange": rng, "pathsFilter": {"includeEventTypes": ["$pageview"]}}),
    ]


def _digest(raw: dict) -> str:
    """A fingerprint of a result (floats rounded), to compare engines."""
    import hashlib

    def norm(v):
        if isinstance(v, float):
            return float(f"{v:.9g}")  # engines sum in different orders
        if isinstance(v, dict):
            return {k: norm(x) for k, x in sorted(v.items())}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return hashlib.sha1(json.dumps(norm(raw), sort_keys=True, default=str).encode()).hexdigest()


def summarize(name: str, raw: dict) -> str:
    res = raw.get("results")
    if name.startswith("funnel"):
        return " → ".join(f"{s['count']:,}" for s in res)
    if name.startswith("trends"):
        top = sorted(res, key=lambda s: -s.get("count", sum(s["data"])))[:3]
        return f"{len(res)} series; " + ", ".join(f"{s.get('breakdown_value')}: {int(sum(s['data'])):,}" for s in top)
    if name.startswith("retention"):
        return "cohort sizes " + " ".join(f"{r['values'][0]['count']:,}" for r in res)
    if name == "lifecycle":
        return ", ".join(f"{r['status']} {sum(r['data']):,}" for r in res)
    if name == "paths":
        return f"{len(res)} edges; top {res[0]['source']} → {res[0]['target']} ({res[0]['value']:,})" if res else "0 edges"
    return ""


# -- phases (each in a process of its own) --------------------------------------------------------
def _rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / (1024 * 1024)


def _say(*parts) -> None:
    print(*parts, flush=True)


def phase_prepare(cache: str, events: int, persons: int, days: int, seed: int) -> dict:
    """Generate the Parquet file and bulk-load it into a fresh data directory."""
    import pyarrow.parquet as pq

    import sightline
    from sightline.ingest.bulk import import_files

    cache_dir = Path(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    parquet = cache_dir / "events.parquet"
    data = cache_dir / "data"
    facts_file = cache_dir / "facts.json"
    if parquet.exists() and facts_file.exists():
        facts = json.loads(facts_file.read_text())
        gen_s = None
        _say(f"  generate: reusing {parquet}")
    else:
        t = time.perf_counter()
        table, facts = generate(events, persons, days, seed)
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        pq.write_table(table, parquet, compression="zstd", row_group_size=1_000_000,
                       store_schema=False)   # plain string columns for readers
        write_s = time.perf_counter() - t
        del table
        facts_file.write_text(json.dumps(facts))
        _say(f"  generate: {facts['events']:,} events, {facts['persons']:,} persons in {gen_s:.1f}s "
             f"(+ Parquet write {write_s:.1f}s, {parquet.stat().st_size / 1e6:,.0f} MB)")
    by = facts["by_event"]
    _say("  events:   " + ", ".join(f"{k} {v:,}" for k, v in by.items())
         + f"; busiest person {facts['max_events_per_person']:,}")
    if data.exists():
        shutil.rmtree(data)
    t = time.perf_counter()
    with sightline.open(data) as core:
        summary = import_files(core, [parquet], progress=False)
        t_close = time.perf_counter()
    close_s = time.perf_counter() - t_close
    total_s = time.perf_counter() - t
    if summary.loaded != facts["events"] or summary.rejected_total or summary.duplicates:
        raise RuntimeError(f"load mismatch: {summary.render()}")
    size_mb = sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / 1e6
    load = {"seconds": summary.seconds, "total_seconds": total_s, "close_seconds": close_s,
            "events_per_s": summary.loaded / summary.seconds, "loaded": summary.loaded,
            "data_mb": size_mb, "peak_rss_mb": _rss_mb(), "generate_seconds": gen_s}
    _say(f"  load:     {summary.loaded:,} events in {summary.seconds:.1f}s = {load['events_per_s']:,.0f} events/s "
         f"(close/checkpoint {close_s:.1f}s; data dir {size_mb:,.0f} MB; peak RSS {load['peak_rss_mb']:,.0f} MB)")
    (cache_dir / "load.json").write_text(json.dumps({"load": load, "facts": facts}))
    return {"load": load, "facts": facts}


def _install_sql_capture():
    """Wrap QueryContext.execute to record the SQL text, parameters and time of every statement."""
    from sightline.query import context as qctx

    captured: list[tuple[str, dict, float]] = []
    original = qctx.QueryContext.execute
    if getattr(original, "_bench_wrapped", False):
        return captured

    def execute(self, sql, params, prepare=None):
        t = time.perf_counter()
        if prepare is not None:  # record the statement that runs (prepare rewrites it)
            inner = prepare

            def prepare(cur, text, values):
                nonlocal sql, params
                sql, params = inner(cur, text, values)
                return sql, params
        rows = original(self, sql, params, prepare=prepare)
        captured.append((sql, dict(params), time.perf_counter() - t))
        return rows

    execute._bench_wrapped = True
    qctx.QueryContext.execute = execute
    return captured


def phase_migrate(cache: str) -> dict:
    """Copy the loaded DuckDB store into chdb with `sightline migrate` (the ClickHouse load)."""
    from sightline.ops.migrate import migrate

    store = chdb_store(cache)
    marker = Path(cache) / "chdb-migrated.json"
    if marker.exists():
        return json.loads(marker.read_text()) | {"reused": True}
    report = migrate(Path(cache) / "data", store)
    if not report.ok:
        raise RuntimeError(f"migration mismatch: {report.to_json()}")
    out = {"seconds": report.seconds, "events": report.events_target,
           "events_per_s": report.events_target / report.seconds if report.seconds else 0.0,
           "peak_rss_mb": _rss_mb()}
    marker.write_text(json.dumps(out))
    return out


def chdb_store(cache: str) -> str:
    return f"chdb://{Path(cache).resolve() / 'chdb-store'}"


def phase_queries(cache: str, days: int, repeat: int, explain: list[str], store: str | None = None) -> dict:
    import sightline

    captured = _install_sql_capture()
    out: dict[str, dict] = {}
    load_before = os.getloadavg()
    with sightline.open(Path(cache) / "data", store=store) as core:
        for name, label, q in queries(days):
            captured.clear()
            t = time.perf_counter()
            raw = core.query(q).raw                      # warm-up
            warm = time.perf_counter() - t
            sql = [(s, p) for s, p, _ in captured]
            times, sql_times = [], []
            for _ in range(repeat):
                captured.clear()
                t = time.perf_counter()
                core.query(q)
                times.append(time.perf_counter() - t)
                sql_times.append(sum(x for *_, x in captured))
            med = statistics.median(times)
            p90 = _percentile(times, 90)
            sql_share = statistics.median(sql_times) / med if med else 0.0
            out[name] = {"label": label, "median": med, "p90": p90, "warmup": warm, "times": times,
                         "sql_share": sql_share, "summary": summarize(name, raw), "statements": len(sql)}
            if name.startswith("funnel"):
                out[name]["counts"] = [s["count"] for s in raw["results"]]
            out[name]["digest"] = _digest(raw)
            _say(f"  {name:<19} median {med * 1000:9.1f} ms  p90 {p90 * 1000:9.1f} ms  min {min(times) * 1000:9.1f} ms  "
                 f"warm-up {warm * 1000:8.1f} ms  "
                 f"in the engine {sql_share:4.0%}  | {out[name]['summary']}")
            if name in explain:
                for s, p in sql:
                    _say(explain_analyze(core, name, s, p))
    return {"queries": out, "peak_rss_mb": _rss_mb(), "loadavg_before": load_before, "loadavg": os.getloadavg()}


def explain_analyze(core, name: str, sql: str, params: dict) -> str:
    """DuckDB's EXPLAIN ANALYZE of one statement, as a compact operator tree (time, rows)."""
    used = {k: v for k, v in params.items() if f"${k}" in sql}
    rows = core.storage.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, used).rows
    prof = json.loads(rows[0][1])
    qinfo, system = prof.get("query", {}), prof.get("system", {})
    total = qinfo.get("total_time") or 0.0
    cpu = qinfo.get("cpu_time") or total     # operator timings add up the threads: compare with CPU time
    lines = [f"\n--- SQL of {name} ---", sql, f"--- parameters --- {used}",
             (f"--- EXPLAIN ANALYZE: {total * 1000:,.0f} ms wall, {qinfo.get('cpu_time', 0) * 1000:,.0f} ms CPU, "
              f"{qinfo.get('total_rows_scanned', 0):,} rows scanned, peak buffer memory "
              f"{system.get('peak_buffer_memory', 0) / 1e6:,.0f} MB (operators >= 1% of the CPU time; "
              f"an operator's own time, summed over threads) ---")]
    keys = ("Function", "Table", "Projections", "Conditions", "Join Type", "Expression", "Groups", "Aggregates")

    def walk(node, depth):
        t = node.get("timing") or 0.0
        if cpu and t >= 0.01 * cpu:
            info = node.get("extra_info") or {}
            detail = "; ".join(f"{k}: {v if isinstance(v, str) else ', '.join(map(str, v))}"
                               for k, v in info.items() if k in keys)
            lines.append(f"{t * 1000:9.0f} ms {t / cpu:4.0%} {'  ' * depth}{node.get('name')} "
                         f"({node.get('intermediate_rows', 0):,} rows) {detail[:220]}")
        for child in node.get("children", []):
            walk(child, depth + 1)

    for op in prof.get("operator", []):
        walk(op, 0)
    return "\n".join(lines)


def _percentile(values: list[float], pct: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * pct / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _chdb_funnel(sess_dir: Path, parquet: Path, days: int):
    """A chdb session with the Parquet file loaded into a MergeTree ordered by (distinct_id,
    timestamp), the windowFunnel SQL for a source, and the load time."""
    from chdb import session as chs

    d_from = START.strftime("%Y-%m-%d 00:00:00")
    d_to = (START + timedelta(days=days - 1)).strftime("%Y-%m-%d 23:59:59.999999")
    s = chs.Session(str(sess_dir))
    t = time.perf_counter()
    s.query("CREATE TABLE events (distinct_id String, timestamp DateTime64(6, 'UTC'), "
            "event LowCardinality(String)) ENGINE = MergeTree ORDER BY (distinct_id, timestamp)")
    s.query(f"INSERT INTO events SELECT distinct_id, timestamp, event FROM file('{parquet}', Parquet)")
    s.query("OPTIMIZE TABLE events FINAL")
    load_s = time.perf_counter() - t
    window_us = FUNNEL_WINDOW_DAYS * 86_400 * US_PER_S

    def funnel_sql(source: str) -> str:
        return (f"SELECT level, count() AS n FROM (SELECT distinct_id, windowFunnel({window_us})("
                f"toUInt64(toUnixTimestamp64Micro(timestamp)), event = '$pageview', event = 'signed_up', "
                f"event = 'purchase') AS level FROM {source} "
                f"WHERE timestamp >= toDateTime64('{d_from}', 6, 'UTC') "
                f"AND timestamp <= toDateTime64('{d_to}', 6, 'UTC') "
                f"AND event IN ('$pageview', 'signed_up', 'purchase') GROUP BY distinct_id) "
                f"GROUP BY level ORDER BY level FORMAT JSONCompact")

    return s, funnel_sql, load_s


def _chdb_counts(s, sql: str) -> list[int]:
    res = s.query(sql, "JSONCompact")
    levels = {int(lv): int(n) for lv, n in json.loads(res.bytes())["data"]}
    return [sum(n for lv, n in levels.items() if lv >= k) for k in (1, 2, 3)]


def phase_chdb(cache: str, days: int, repeat: int) -> dict:
    """windowFunnel over the same Parquet file in chdb (ClickHouse in-process)."""
    try:
        import chdb  # noqa: F401
    except ImportError:
        return {"error": "chdb is not installed"}
    cache_dir = Path(cache)
    parquet = cache_dir / "events.parquet"
    sess_dir = Path(tempfile.mkdtemp(prefix="chdb-", dir=cache_dir))
    try:
        s, funnel_sql, load_s = _chdb_funnel(sess_dir, parquet, days)
        results = {}
        for key, source in (("mergetree", "events"), ("parquet_file", f"file('{parquet}', Parquet)")):
            sql = funnel_sql(source)
            steps = _chdb_counts(s, sql)
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                s.query(sql, "JSONCompact")
                times.append(time.perf_counter() - t)
            results[key] = {"median": statistics.median(times), "p90": _percentile(times, 90),
                            "counts": steps, "sql": sql}
        s.close()
        return {"load_seconds": load_s, **results, "peak_rss_mb": _rss_mb()}
    finally:
        shutil.rmtree(sess_dir, ignore_errors=True)


def phase_head_to_head(cache: str, days: int, rounds: int) -> dict:
    """The 3-step funnel through ``core.query`` and chdb's windowFunnel (MergeTree) in one
    process, alternating round by round: both sides see the same machine load, so their ratio
    holds on a busy machine where the separate phases' ratio does not."""
    try:
        import chdb  # noqa: F401
    except ImportError:
        return {"error": "chdb is not installed"}
    import sightline

    cache_dir = Path(cache)
    sess_dir = Path(tempfile.mkdtemp(prefix="chdb-", dir=cache_dir))
    q = next(qq for n, _, qq in queries(days) if n == "funnel_3")
    try:
        s, funnel_sql, _ = _chdb_funnel(sess_dir, cache_dir / "events.parquet", days)
        sql = funnel_sql("events")
        with sightline.open(cache_dir / "data") as core:
            ours_counts = [st["count"] for st in core.query(q).raw["results"]]   # warm-ups
            theirs_counts = _chdb_counts(s, sql)
            ours, theirs = [], []
            for _ in range(rounds):
                t = time.perf_counter()
                core.query(q)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                s.query(sql, "JSONCompact")
                theirs.append(time.perf_counter() - t)
        s.close()
        ratios = [a / b for a, b in zip(ours, theirs)]
        return {"ours": ours, "theirs": theirs, "ratio_median": statistics.median(ratios),
                "ratio_of_minimums": min(ours) / min(theirs), "match": ours_counts == theirs_counts,
                "loadavg": os.getloadavg()}
    finally:
        shutil.rmtree(sess_dir, ignore_errors=True)


def _in_process(fn, *args):
    """Run ``fn(*args)`` in a fresh (spawned) process, so its peak RSS is its own."""
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        return ex.submit(fn, *args).result()


# -- driving it -------------------------------------------------------------------------------------
def _fmt_ms(s: float | None) -> str:
    return "—" if s is None else (f"{s * 1000:,.0f}" if s >= 1 else f"{s * 1000:,.1f}")


def run_size(root: Path, events: int, persons: int, args) -> dict:
    key = f"sl-e{events}-p{persons}-d{args.days}-s{args.seed}-g{GEN_VERSION}"
    cache = root / key
    _say(f"\n=== {events:,} events, {persons:,} persons, {args.days} days, seed {args.seed} ({cache}) ===")
    loaded = cache / "load.json"
    if loaded.exists() and (cache / "data" / "events.duckdb").exists():
        prep = json.loads(loaded.read_text())
        ld = prep["load"]
        _say(f"  load:     reusing the loaded data dir (loaded earlier: {ld['loaded']:,} events in "
             f"{ld['seconds']:.1f}s = {ld['events_per_s']:,.0f} events/s)")
        prep["reused"] = True
    else:
        prep = _in_process(phase_prepare, str(cache), events, persons, args.days, args.seed)
    q = _in_process(phase_queries, str(cache), args.days, args.repeat, args.explain)
    _say(f"  peak RSS of the query process: {q['peak_rss_mb']:,.0f} MB; 1-min load average "
         f"{q['loadavg_before'][0]:.1f} before, {q['loadavg'][0]:.1f} after the queries "
         f"(above {os.cpu_count()}, other work on the machine skews the timings)")
    engine = None
    if args.store == "chdb":
        mig = _in_process(phase_migrate, str(cache))
        _say(f"  chdb load: `sightline migrate` copied {mig['events']:,} events in {mig['seconds']:.1f}s "
             f"= {mig['events_per_s']:,.0f} events/s" + (" (earlier run, reused)" if mig.get("reused") else ""))
        _say("  the same queries on the ClickHouse engine (chdb store):")
        cq = _in_process(phase_queries, str(cache), args.days, args.repeat, [], chdb_store(str(cache)))
        engine = {"migrate": mig, "queries": cq}
        for name, r in cq["queries"].items():
            r["same_result"] = r["digest"] == q["queries"][name]["digest"]
    ch = None
    if not args.no_chdb:
        ch = _in_process(phase_chdb, str(cache), args.days, args.repeat)
        if "error" in ch:
            _say(f"  chdb: {ch['error']}")
        else:
            ours = q["queries"]["funnel_3"]
            mt = ch["mergetree"]
            _say(f"  chdb windowFunnel (MergeTree ORDER BY distinct_id, timestamp; load {ch['load_seconds']:.1f}s "
                 f"not counted): median {mt['median'] * 1000:.1f} ms, p90 {mt['p90'] * 1000:.1f} ms; "
                 f"straight from the Parquet file: median {ch['parquet_file']['median'] * 1000:.1f} ms")
            _say(f"  funnel_3 sightline / chdb = {ours['median'] / mt['median']:.1f}x "
                 f"(vs chdb on the Parquet file: {ours['median'] / ch['parquet_file']['median']:.1f}x)")
            same = ours["counts"] == mt["counts"] == ch["parquet_file"]["counts"]
            _say(f"  step counts: sightline {ours['counts']}  chdb {mt['counts']}  "
                 f"{'MATCH' if same else 'MISMATCH'}")
            ch["match"] = same
            _say(f"  peak RSS of the chdb process: {ch['peak_rss_mb']:,.0f} MB")
            rounds = max(args.repeat, 7)
            h2h = _in_process(phase_head_to_head, str(cache), args.days, rounds)
            ch["head_to_head"] = h2h
            if "error" not in h2h:
                _say(f"  head to head, one process, alternating ({rounds} rounds): sightline funnel_3 median "
                     f"{statistics.median(h2h['ours']) * 1000:.1f} ms, chdb windowFunnel median "
                     f"{statistics.median(h2h['theirs']) * 1000:.1f} ms; ratio per round, median "
                     f"{h2h['ratio_median']:.2f}x; ratio of the minimums {h2h['ratio_of_minimums']:.2f}x; "
                     f"counts {'MATCH' if h2h['match'] else 'MISMATCH'}")
                ch["match"] = ch["match"] and h2h["match"]
    return {"events": events, "persons": persons, "prep": prep, "queries": q, "chdb": ch, "engine": engine}


def print_table(runs: list[dict], args, version: str = "") -> None:
    names = [n for n, *_ in queries(args.days)]
    sizes = [f"{r['events'] / 1e6:g}M" if r["events"] >= 1e6 else f"{r['events'] / 1e3:g}k" for r in runs]
    head = f"{'':<32}" + "".join(f"{s + ' median':>14}{s + ' p90':>12}" for s in sizes)
    growth = len(runs) > 1
    if growth:
        head += f"{'growth ' + sizes[-1] + '/' + sizes[0]:>16}"
    title = (f"Summary (ms; {args.repeat} runs after one warm-up; {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}; code {version})")
    lines = ["", "=" * len(head), title, head, "-" * len(head)]

    def row(label, values, ratio_from=None):
        line = f"{label:<32}" + "".join(f"{_fmt_ms(m):>14}{_fmt_ms(p):>12}" for m, p in values)
        if growth and ratio_from:
            a, b = ratio_from
            line += f"{(b / a if a else float('nan')):>15.1f}x"
        return line

    for n in names:
        vals = [(r["queries"]["queries"][n]["median"], r["queries"]["queries"][n]["p90"]) for r in runs]
        lines.append(row(n, vals, (vals[0][0], vals[-1][0])))
    if all(r.get("engine") for r in runs):
        lines.append("-" * len(head))
        lines.append("ClickHouse engine (chdb store, same queries through core.query):")
        for n in names:
            vals = [(r["engine"]["queries"]["queries"][n]["median"], r["engine"]["queries"]["queries"][n]["p90"])
                    for r in runs]
            lines.append(row(n + " [chdb]", vals, (vals[0][0], vals[-1][0])))
        lines.append(f"{'chdb / duckdb (median)':<32}" + "".join(
            f"{'':>14}{'':>12}" for _ in runs))
        for n in names:
            lines.append(f"{'  ' + n:<32}" + "".join(
                f"{r['engine']['queries']['queries'][n]['median'] / r['queries']['queries'][n]['median']:>13.1f}x"
                f"{'same' if r['engine']['queries']['queries'][n]['same_result'] else 'DIFFERS':>12}" for r in runs))
        lines.append(f"{'chdb load (migrate) s':<32}" + "".join(
            f"{r['engine']['migrate']['seconds']:>14.1f}{r['engine']['migrate']['events_per_s']:>12,.0f}"
            for r in runs))
    if all(r["chdb"] and "mergetree" in r["chdb"] for r in runs):
        vals = [(r["chdb"]["mergetree"]["median"], r["chdb"]["mergetree"]["p90"]) for r in runs]
        lines.append(row("chdb windowFunnel (3 steps)", vals, (vals[0][0], vals[-1][0])))
        vals = [(r["chdb"]["parquet_file"]["median"], r["chdb"]["parquet_file"]["p90"]) for r in runs]
        lines.append(row("chdb windowFunnel, Parquet file", vals, (vals[0][0], vals[-1][0])))
        lines.append(f"{'funnel_3 / chdb (MergeTree)':<32}" + "".join(
            f"{r['queries']['queries']['funnel_3']['median'] / r['chdb']['mergetree']['median']:>13.1f}x{'':>12}"
            for r in runs))
        if all("ratio_median" in r["chdb"].get("head_to_head", {}) for r in runs):
            lines.append(f"{'funnel_3 / chdb, alternating':<32}" + "".join(
                f"{r['chdb']['head_to_head']['ratio_median']:>13.2f}x{'':>12}" for r in runs))
        lines.append(f"{'funnel_3 counts == chdb':<32}" + "".join(
            f"{'yes' if r['chdb']['match'] else 'NO':>14}{'':>12}" for r in runs))
    lines.append("-" * len(head))
    lines.append(f"{'persons':<32}" + "".join(f"{r['persons']:>14,}{'':>12}" for r in runs))
    lines.append(f"{'load s (events/s)':<32}" + "".join(
        f"{r['prep']['load']['seconds']:>14.1f}{r['prep']['load']['events_per_s']:>12,.0f}" for r in runs))
    lines.append(f"{'peak RSS MB: load / queries':<32}" + "".join(
        f"{r['prep']['load']['peak_rss_mb']:>14,.0f}{r['queries']['peak_rss_mb']:>12,.0f}" for r in runs))
    if all(r["chdb"] and "peak_rss_mb" in r["chdb"] for r in runs):
        lines.append(f"{'peak RSS MB: chdb process':<32}" + "".join(
            f"{r['chdb']['peak_rss_mb']:>14,.0f}{'':>12}" for r in runs))
    lines.append(f"{'data dir MB':<32}" + "".join(f"{r['prep']['load']['data_mb']:>14,.0f}{'':>12}" for r in runs))
    lines.append("=" * len(head))
    _say("\n".join(lines))


def code_version() -> str:
    """The commit measured, and whether sightline/ has uncommitted changes (figures depend on both)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sightline"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes in sightline/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Insight query latency over synthetic data (see the module docstring).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000, help="events to generate and load")
    p.add_argument("--persons", type=int, default=1_000_000, help="persons (distinct_ids) at --events")
    p.add_argument("--days", type=int, default=30, help="days the events span")
    p.add_argument("--seed", type=int, default=42, help="random seed of the generator")
    p.add_argument("--store", choices=["duckdb", "chdb"], default="duckdb",
                   help="chdb: also copy the loaded data into a ClickHouse (chdb) store with `sightline migrate` "
                        "and run the same queries on it, side by side with DuckDB (results compared)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per query (after one warm-up)")
    p.add_argument("--sizes", help="comma-separated event counts (e.g. 1000000,10000000) to show growth; "
                                   "persons scale with the events")
    p.add_argument("--data-dir", type=Path, help="keep generated files and loaded data here, keyed by the "
                                                   "parameters; a rerun reuses them")
    p.add_argument("--no-chdb", action="store_true", help="skip the chdb windowFunnel comparison")
    p.add_argument("--explain", action="append", default=[], metavar="QUERY",
                   help="print EXPLAIN ANALYZE of this query's SQL (repeatable)")
    p.add_argument("--json", type=Path, help="also write all figures as JSON here")
    args = p.parse_args(argv)

    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    sizes = [int(float(x)) for x in args.sizes.split(",")] if args.sizes else [args.events]
    ratio = args.persons / args.events
    plan = [(n, args.persons if n == args.events else max(1, round(n * ratio))) for n in sizes]

    temp = None
    root = args.data_dir
    if root is None:
        temp = Path(tempfile.mkdtemp(prefix="sightline-bench-"))
        root = temp
    root.mkdir(parents=True, exist_ok=True)
    version = code_version()
    _say(f"sightline query benchmark: sizes {', '.join(f'{n:,}' for n, _ in plan)}; {args.days} days from "
         f"{START.date()}; repeat {args.repeat}; {os.cpu_count()} CPUs; data under {root}; code {version}")
    try:
        runs = [run_size(root, n, persons, args) for n, persons in plan]
        print_table(runs, args, version)
        if args.json:
            args.json.write_text(json.dumps({"code": version, "runs": runs}, indent=2, default=str))
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    mismatch = any(r["chdb"] and r["chdb"].get("match") is False for r in runs)
    mismatch |= any(r.get("engine") and not all(x["same_result"] for x in r["engine"]["queries"]["queries"].values())
                    for r in runs)
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
