"""The persons behind a number: ``InsightActorsQuery`` over any insight.

``{"kind": "InsightActorsQuery", "source": <insight query>, ...}`` selects the actors of one
point: a trend's ``day`` (and ``breakdown``, ``series``), a funnel's ``funnelStep`` (``k`` =
reached step k, ``-k`` = dropped off before step k), a retention cohort ``interval`` (and
``period``), a lifecycle ``day`` and ``status``, or a stickiness ``day`` (number of intervals).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import Field

from sightline.errors import InvalidInput
from sightline.query import funnels, lifecycle, retention, stickiness, trends
from sightline.query.context import QueryContext
from sightline.query.dates import resolve, step
from sightline.query.filters import NULL_SENTINEL, OTHER_SENTINEL
from sightline.query.model import Model


class InsightActorsQuery(Model):
    kind: Literal["InsightActorsQuery"] = "InsightActorsQuery"
    source: dict
    day: str | int | None = None
    status: Literal["new", "returning", "resurrecting", "dormant"] | None = None
    series: int = Field(default=0, ge=0)
    breakdown: Any = None
    funnelStep: int | None = None
    interval: int | None = Field(default=None, ge=0)  # retention cohort row
    period: int | None = Field(default=None, ge=0)    # retention column
    limit: int = Field(default=100, ge=1, le=10_000)
    offset: int = Field(default=0, ge=0)


def _trends_actors(ctx: QueryContext, q, a: InsightActorsQuery):
    if a.series >= len(q.series):
        raise InvalidInput("`series` is out of range.", attr="series")
    s = q.series[a.series]
    rng = resolve(q.dateRange.date_from, q.dateRange.date_to, interval=q.interval, tz=ctx.timezone, now=ctx.now,
                  explicit=q.dateRange.explicitDate, week_start_monday=ctx.week_start_monday)
    scope = ctx.scope()
    p = scope.params
    if a.day is None:
        start, end = p.add(rng.start, "start"), p.add(rng.end, "end")
    else:
        bucket = resolve(str(a.day), str(a.day), interval=q.interval, tz=rng.tz, now=ctx.now, explicit=True).local_from
        bucket_start = bucket.replace(tzinfo=rng.tz)
        if s.math in ("weekly_active", "monthly_active") and q.interval == "day":
            days = 7 if s.math == "weekly_active" else 30
            bucket_start = step(bucket, "day", 1 - days).replace(tzinfo=rng.tz)
        start = p.add(bucket_start, "start")
        end = p.add(step(bucket, q.interval).replace(tzinfo=rng.tz), "end")
    where = trends._where(ctx, scope, q, s, start, end).replace(f"e.timestamp <= {end}", f"e.timestamp < {end}")
    bd = trends._breakdown_expr(scope, q)
    if bd is not None and a.breakdown is not None:
        if a.breakdown == OTHER_SENTINEL:
            raise InvalidInput("Persons of the Other breakdown are not available; narrow the breakdown limit.",
                               attr="breakdown")
        where += f" AND {bd} = {p.add(str(a.breakdown), 'bv')}"
    actor = trends._actor(scope, s, q)
    return (f"WITH sel AS (SELECT DISTINCT {actor} AS actor FROM events e{scope.joins()} WHERE {where}) ", p)


def _funnel_actors(ctx: QueryContext, q, a: InsightActorsQuery):
    f = funnels.FunnelSQL(ctx, q)
    step_ = a.funnelStep if a.funnelStep is not None else 1
    n = f.n
    if step_ > 0:
        if step_ > n:
            raise InvalidInput("`funnelStep` is beyond the last step.", attr="funnelStep")
        cond = f"reached >= {step_ - 1}"
    elif step_ <= -2:
        if -step_ > n:
            raise InvalidInput("`funnelStep` is beyond the last step.", attr="funnelStep")
        cond = f"reached = {-step_ - 2}"
    else:
        raise InvalidInput("`funnelStep` is k > 0 (reached step k) or -k with k >= 2 (dropped before step k).",
                           attr="funnelStep")
    p = f.scope.params
    if f.breakdown() is not None and a.breakdown is not None:
        cond += (" AND bv_key IS NULL" if a.breakdown == NULL_SENTINEL
                 else f" AND bv_key = {p.add(str(a.breakdown), 'bv')}")
    return f"{f.actors_sql()}, sel AS (SELECT DISTINCT actor FROM actors WHERE {cond}) ", p


def _retention_actors(ctx: QueryContext, q, a: InsightActorsQuery):
    ctes, p, rng, unit = retention.build(ctx, q)
    if a.interval is None:
        raise InvalidInput("Retention persons need `interval`, the cohort row.", attr="interval")
    cohort = p.add(step(rng.local_from, unit, a.interval), "cohort")
    bv = f" AND bv = {p.add(str(a.breakdown), 'bv')}" if a.breakdown is not None else ""
    if a.period:
        return ctes + (f", sel AS (SELECT DISTINCT actor FROM k WHERE cohort = {cohort} AND k = {int(a.period)}"
                       f"{bv}) "), p
    return ctes + f", sel AS (SELECT DISTINCT actor FROM s WHERE cohort = {cohort}{bv}) ", p


def _lifecycle_actors(ctx: QueryContext, q, a: InsightActorsQuery):
    ctes, p, rng, buckets, series = lifecycle.build(ctx, q)
    if a.day is None or a.status is None:
        raise InvalidInput("Lifecycle persons need `day` and `status`.", attr="status")
    day = resolve(str(a.day), str(a.day), interval=q.interval, tz=rng.tz, now=ctx.now, explicit=True).local_from
    return (ctes + f", sel AS (SELECT DISTINCT actor FROM st WHERE period = {p.add(day, 'day')} "
            f"AND status = {p.add(a.status, 'status')}) "), p


def _stickiness_actors(ctx: QueryContext, q, a: InsightActorsQuery):
    if a.series >= len(q.series):
        raise InvalidInput("`series` is out of range.", attr="series")
    rng = resolve(q.dateRange.date_from, q.dateRange.date_to, interval=q.interval, tz=ctx.timezone, now=ctx.now,
                  explicit=q.dateRange.explicitDate, week_start_monday=ctx.week_start_monday)
    ctes, p = stickiness.build_series(ctx, q, stickiness.filter_of(q), rng, q.series[a.series])
    try:
        k = int(a.day)
    except (TypeError, ValueError):
        raise InvalidInput("Stickiness persons need `day`: the number of intervals.", attr="day") from None
    return ctes + f", sel AS (SELECT actor FROM n WHERE n = {p.add(k, 'k')}) ", p


BUILDERS = {
    "TrendsQuery": _trends_actors,
    "FunnelsQuery": _funnel_actors,
    "RetentionQuery": _retention_actors,
    "LifecycleQuery": _lifecycle_actors,
    "StickinessQuery": _stickiness_actors,
}


def run(ctx: QueryContext, a: InsightActorsQuery) -> dict:
    from sightline.query.runner import parse

    source = parse(a.source)
    builder = BUILDERS.get(source.kind)
    if builder is None:
        raise InvalidInput(f"Persons are not available for {source.kind}.", attr="source")
    ctes, p = builder(ctx, source, a)
    limit, offset = p.add(a.limit + 1, "limit"), p.add(a.offset, "offset")
    d = ctx.dialect
    ids, ids_join = d.distinct_ids_of("pr.id", "pr.project_id", f"SELECT {d.try_uuid('actor')} FROM sel")
    sql = (ctes + f"SELECT {d.to_text('sel.actor')}, pr.properties, pr.created_at, pr.is_identified, {ids} "
           f"FROM sel LEFT JOIN persons pr ON pr.id = {d.try_uuid('sel.actor')}{ids_join} "
           f"ORDER BY pr.created_at NULLS LAST, 1 LIMIT {limit} OFFSET {offset}")
    rows = ctx.execute(sql, p.values)
    results = []
    for actor, props, created, identified, ids in rows[:a.limit]:
        properties = orjson.loads(props) if props else {}
        results.append({"id": actor, "distinct_ids": list(ids or []), "properties": properties,
                        "created_at": created.isoformat() if created else None, "is_identified": bool(identified),
                        "name": properties.get("email") or properties.get("name") or (ids[0] if ids else actor)})
    return {"results": results, "columns": ["person"], "hasMore": len(rows) > a.limit,
            "limit": a.limit, "offset": a.offset, "kind": "InsightActorsQuery"}
