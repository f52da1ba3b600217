"""Lifecycle (spec analytics §4): new, returning, resurrecting and dormant actors per interval."""

from __future__ import annotations

from sightline.query.context import QueryContext
from sightline.query.dates import resolve, step, trunc
from sightline.query.filters import PERSON_ID, properties_sql, test_account_filters
from sightline.query.model import LifecycleQuery
from sightline.query.perf import local_time, person_profile_condition

STATUSES = ("new", "returning", "resurrecting", "dormant")


def _seq(ctx: QueryContext, q: LifecycleQuery):
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
    period = d.trunc(unit, local_time(d, "e.timestamp", tz, rng.tz.key), ctx.week_start_monday)
    created = d.trunc(unit, local_time(d, "pr.created_at", tz, rng.tz.key), ctx.week_start_monday)
    one = {"hour": "INTERVAL 1 HOUR", "day": "INTERVAL 1 DAY", "week": "INTERVAL 7 DAY",
           "month": "INTERVAL 1 MONTH", "minute": "INTERVAL 1 MINUTE"}[unit]
    # act: one row per actor and active period (grouped before any window); seq: each with the
    # actor's previous and next active periods
    seq = (f"WITH act AS (SELECT DISTINCT {PERSON_ID} AS actor, {period} AS p FROM events e{scope.joins()} "
           f"WHERE {' AND '.join(w for w in where if w != 'true')}), "
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
    results = []
    for status in STATUSES:
        sign = -1 if status == "dormant" else 1
        data = [sign * counts.get((b, status), 0) for b in buckets]
        results.append({"status": status, "label": f"{series.event or 'All events'} - {status}",
                        "data": data, "count": sum(data), "days": [rng.label(b) for b in buckets],
                        "labels": [rng.pretty(b) for b in buckets],
                        "action": {"id": series.event, "name": series.event, "type": "events", "math": "total"}})
    return {"results": results, "kind": "LifecycleQuery", "timezone": rng.tz.key}
