"""Lifecycle (spec analytics §4): new, returning, resurrecting and dormant actors per interval."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sightline.query.context import QueryContext
from sightline.query.dates import Range, resolve, step, trunc
from sightline.query.filters import PERSON_ID, Scope, properties_sql, test_account_filters
from sightline.query.model import LifecycleQuery
from sightline.query.perf import local_time, person_profile_condition

STATUSES = ("new", "returning", "resurrecting", "dormant")


@dataclass
class _Source:
    """The events one lifecycle query reads: ``FROM events e{joins} WHERE {where}``."""

    scope: Scope
    tz: str  # the time zone's parameter
    rng: Range
    buckets: list[datetime]
    series: Any
    read_from: datetime  # naive local: one interval before the range's first bucket
    read_to: datetime  # naive local, exclusive: one interval after the range's last bucket
    where: str


def _source(ctx: QueryContext, q: LifecycleQuery) -> _Source:
    unit = q.interval
    rng = resolve(q.dateRange.date_from, q.dateRange.date_to, interval=unit, tz=ctx.timezone, now=ctx.now,
                  explicit=q.dateRange.explicitDate, week_start_monday=ctx.week_start_monday)
    buckets = rng.buckets()
    scope = ctx.scope()
    d, p = scope.dialect, scope.params
    tz = p.add(rng.tz.key, "tz")
    # one interval of look-back before the range, one after it (for dormant)
    read_from = step(trunc(rng.local_from, unit, ctx.week_start_monday), unit, -1)
    read_to = step(trunc(rng.local_to, unit, ctx.week_start_monday), unit, 1)
    start = p.add(read_from.replace(tzinfo=rng.tz), "start")
    end = p.add(read_to.replace(tzinfo=rng.tz), "end")
    series = q.series[0]
    where = [f"e.project_id = {scope.project}", f"e.timestamp >= {start}", f"e.timestamp < {end}",
             person_profile_condition(d, p)]
    if series.event is not None:
        where.append(f"e.event = {p.add(series.event, 'event')}")
    where += [properties_sql(series.properties, scope), properties_sql(q.properties, scope)]
    if q.filterTestAccounts:
        where.append(properties_sql(test_account_filters(ctx.settings), scope))
    return _Source(scope, tz, rng, buckets, series, read_from, read_to, " AND ".join(w for w in where if w != "true"))


def _seq(ctx: QueryContext, q: LifecycleQuery):
    src = _source(ctx, q)
    unit, scope, rng, tz, buckets, series = q.interval, src.scope, src.rng, src.tz, src.buckets, src.series
    d, p = scope.dialect, scope.params
    period = d.trunc(unit, local_time(d, "e.timestamp", tz, rng.tz.key), ctx.week_start_monday)
    created = d.trunc(unit, local_time(d, "pr.created_at", tz, rng.tz.key), ctx.week_start_monday)
    one = {"hour": "INTERVAL 1 HOUR", "day": "INTERVAL 1 DAY", "week": "INTERVAL 7 DAY",
           "month": "INTERVAL 1 MONTH", "minute": "INTERVAL 1 MINUTE"}[unit]
    # act: one row per actor and active period (grouped before any window); seq: each with the
    # actor's previous and next active periods
    seq = (f"WITH act AS (SELECT DISTINCT {PERSON_ID} AS actor, {period} AS p FROM events e{scope.joins()} "
           f"WHERE {src.where}), "
           f"seq AS (SELECT a.actor, a.p, lag(a.p) OVER w AS prev_p, lead(a.p) OVER w AS next_p, "
           f"row_number() OVER w AS j, {created} AS c FROM act a LEFT JOIN persons pr ON pr.id = a.actor "
           f"WINDOW w AS (PARTITION BY a.actor ORDER BY a.p))")
    status = (f"CASE WHEN j = 1 AND c = p THEN 'new' "
              f"WHEN j <> 1 AND prev_p = p - {one} THEN 'returning' ELSE 'resurrecting' END")
    dormant_next = f"(next_p IS NULL OR next_p <> p + {one})"  # dormant in the period after p
    return seq, status, dormant_next, p, rng, buckets, series


def build(ctx: QueryContext, q: LifecycleQuery):
    """The CTEs ending in st(period, status, actor): every actor's status in every period."""
    seq, status, dormant_next, p, rng, buckets, series = _seq(ctx, q)
    one = {"hour": "INTERVAL 1 HOUR", "day": "INTERVAL 1 DAY", "week": "INTERVAL 7 DAY",
           "month": "INTERVAL 1 MONTH", "minute": "INTERVAL 1 MINUTE"}[q.interval]
    sql = (f"{seq}, st AS (SELECT p AS period, {status} AS status, actor FROM seq "
           f"UNION ALL SELECT p + {one}, 'dormant', actor FROM seq WHERE {dormant_next}) ")
    return sql, p, rng, buckets, series


def run(ctx: QueryContext, q: LifecycleQuery) -> dict:
    counts = _counts_from_masks(ctx, q)
    if counts is not None:
        rng, buckets, series, counts = counts
        return _result(q, rng, buckets, series, counts)
    seq, status, dormant_next, p, rng, buckets, series = _seq(ctx, q)
    # One pass over seq (one row per actor and active period, so count(*) counts actors): each
    # row counts under its status in its period and, if the next period is not active, as
    # dormant in that one (added up in Python: no second pass, no UNION).
    sql = (f"{seq} SELECT p, {status} AS status, count(*), count(*) FILTER (WHERE {dormant_next}) "
           f"FROM seq GROUP BY ALL")
    counts: dict[tuple, int] = {}
    for period, st, n, dormant in ctx.execute(sql, p.values):
        counts[(period, st)] = counts.get((period, st), 0) + int(n)
        if dormant:
            key = (step(period, q.interval, 1), "dormant")
            counts[key] = counts.get(key, 0) + int(dormant)
    return _result(q, rng, buckets, series, counts)


def _result(q: LifecycleQuery, rng, buckets: list, series, counts: dict[tuple, int]) -> dict:
    results = []
    for status in STATUSES:
        sign = -1 if status == "dormant" else 1
        data = [sign * counts.get((b, status), 0) for b in buckets]
        results.append({"status": status, "label": f"{series.event or 'All events'} - {status}",
                        "data": data, "count": sum(data), "days": [rng.label(b) for b in buckets],
                        "labels": [rng.pretty(b) for b in buckets],
                        "action": {"id": series.event, "name": series.event, "type": "events", "math": "total"}})
    return {"results": results, "kind": "LifecycleQuery", "timezone": rng.tz.key}


# Periods read (range + look-back + look-ahead) up to which run() uses one bit per period (DuckDB)
MASK_PERIODS_MAX = 62
_UNIT_US = {"minute": 60_000_000, "hour": 3_600_000_000, "day": 86_400_000_000}


def _counts_from_masks(ctx: QueryContext, q: LifecycleQuery):
    """Lifecycle counts from one bit mask of active periods per actor (DuckDB, at most
    ``MASK_PERIODS_MAX`` periods read), or ``None`` for the general path.

    One ``GROUP BY actor`` over the events ORs ``1 << period index`` together (no DISTINCT over
    (actor, period) pairs, no window over them); the persons join adds the creation period.
    Then, per mask ``m`` (bit i: active in period i): ``m & (m << 1)`` are the returning
    periods, ``m & ~(m << 1)`` the periods after an inactive one (resurrecting, or new for the
    lowest bit when the actor was created in that period), ``(m << 1) & ~m`` the dormant ones.
    Masks are grouped first, so the per-bit sums run over the distinct activity patterns."""
    from sightline.query.perf import UTC_NAMES

    if ctx.dialect.name != "duckdb":
        return None
    src = _source(ctx, q)
    unit, scope, rng, d, p = q.interval, src.scope, src.rng, src.scope.dialect, src.scope.params
    periods = [src.read_from]
    while (nxt := step(periods[-1], unit, 1)) < src.read_to:
        periods.append(nxt)
        if len(periods) > MASK_PERIODS_MAX:
            return None
    n = len(periods)
    origin = p.add(src.read_from, "origin")  # naive local time: a TIMESTAMP
    if unit in _UNIT_US and rng.tz.key in UTC_NAMES:
        start_us = int(src.read_from.replace(tzinfo=rng.tz).timestamp()) * 1_000_000
        idx = f"((epoch_us(e.timestamp) - {p.add(start_us, 'origin_us')}) // {_UNIT_US[unit]})"
    else:
        period = d.trunc(unit, local_time(d, "e.timestamp", src.tz, rng.tz.key), ctx.week_start_monday)
        idx = d.period_diff(unit, f"CAST({origin} AS TIMESTAMP)", period)
    created = d.trunc(unit, local_time(d, "pr.created_at", src.tz, rng.tz.key), ctx.week_start_monday)
    c_idx = d.period_diff(unit, f"CAST({origin} AS TIMESTAMP)", created)
    low = "(m & ~(m - 1))"  # the lowest set bit: the first active period
    sql = (f"WITH a AS (SELECT {PERSON_ID} AS actor, bit_or(1::BIGINT << {idx}) AS m FROM events e{scope.joins()} "
           f"WHERE {src.where} GROUP BY 1), "
           f"b AS (SELECT a.m, {c_idx} AS c FROM a LEFT JOIN persons pr ON pr.id = a.actor), "
           f"k AS (SELECT m, coalesce(CASE WHEN c >= 0 AND c < {n} THEN {low} = (1::BIGINT << c) END, false) AS isnew, "
           f"count(*) AS cnt FROM b GROUP BY ALL), "
           f"f AS (SELECT cnt, m & (m << 1) AS ret, CASE WHEN isnew THEN {low} ELSE 0 END AS nw, "
           f"m & ~(m << 1) AS starts, (m << 1) & ~m AS dorm FROM k) SELECT "
           + ", ".join(f"sum(cnt * (({col} >> {i}) & 1))" for col in ("nw", "ret", "starts", "dorm")
                       for i in range(n))
           + " FROM f")
    [row] = ctx.execute(sql, p.values)
    counts: dict[tuple, int] = {}
    for j, status in enumerate(("new", "returning", "resurrecting", "dormant")):
        for i, period in enumerate(periods):
            v = int(row[j * n + i] or 0)
            if status == "resurrecting":
                v -= int(row[i] or 0)  # the first period of a new actor is not a resurrection
            if v:
                counts[(period, status)] = v
    return rng, src.buckets, src.series, counts
