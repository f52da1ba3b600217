"""Stickiness (spec analytics §5): how many intervals of the range each actor was active in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sightline.query.context import QueryContext
from sightline.query.dates import resolve
from sightline.query.filters import PERSON_ID, properties_sql, test_account_filters
from sightline.query.model import Model, StickinessQuery


class StickinessCriteria(Model):
    operator: Literal["gte", "lte", "exact"] = "gte"
    value: int = Field(default=1, ge=0)


class StickinessFilter(Model):
    computedAs: Literal["non_cumulative", "cumulative"] = "non_cumulative"
    stickinessCriteria: StickinessCriteria | None = None


def build_series(ctx: QueryContext, q: StickinessQuery, sf: StickinessFilter, rng, series):
    """The CTEs ending in n(actor, n): in how many intervals each actor met the criterion."""
    scope = ctx.scope()
    d, p = scope.dialect, scope.params
    tz = p.add(rng.tz.key, "tz")
    index = series.math_group_type_index if series.math == "unique_group" else q.aggregation_group_type_index
    actor = f"e.group_{index}" if index is not None else PERSON_ID
    where = [f"e.project_id = {scope.project}", f"e.timestamp >= {p.add(rng.start, 'start')}",
             f"e.timestamp <= {p.add(rng.end, 'end')}"]
    if series.event is not None:
        where.append(f"e.event = {p.add(series.event, 'event')}")
    if index is not None:
        where.append(f"nullif(e.group_{index}, '') IS NOT NULL")
    where += [properties_sql(series.properties, scope), properties_sql(q.properties, scope)]
    if q.filterTestAccounts:
        where.append(properties_sql(test_account_filters(ctx.settings), scope))
    crit = sf.stickinessCriteria or StickinessCriteria()
    op = {"gte": ">=", "lte": "<=", "exact": "="}[crit.operator]
    value = p.add(max(crit.value, 1) if crit.operator == "gte" else crit.value, "crit")
    bucket = d.trunc(q.interval, d.local("e.timestamp", tz), ctx.week_start_monday)
    ctes = (f"WITH per AS (SELECT {actor} AS actor, {bucket} AS b, count(*) AS c FROM events e{scope.joins()} "
            f"WHERE {' AND '.join(w for w in where if w != 'true')} GROUP BY 1, 2), "
            f"n AS (SELECT actor, count(*) FILTER (WHERE c {op} {value} AND c > 0) AS n FROM per GROUP BY actor) ")
    return ctes, p


def filter_of(q: StickinessQuery) -> StickinessFilter:
    return StickinessFilter.model_validate(getattr(q, "stickinessFilter", None) or {})


def run(ctx: QueryContext, q: StickinessQuery) -> dict:
    sf = filter_of(q)
    rng = resolve(q.dateRange.date_from, q.dateRange.date_to, interval=q.interval, tz=ctx.timezone, now=ctx.now,
                  explicit=q.dateRange.explicitDate, week_start_monday=ctx.week_start_monday)
    k_max = len(rng.buckets())
    unit_name = {"minute": "minute", "hour": "hour", "day": "day", "week": "week", "month": "month"}[q.interval]
    results = []
    for i, series in enumerate(q.series):
        ctes, p = build_series(ctx, q, sf, rng, series)
        sql = ctes + "SELECT n, count(*) FROM n WHERE n > 0 GROUP BY n"
        per_n = {int(n): int(c) for n, c in ctx.execute(sql, p.values)}
        if sf.computedAs == "cumulative":
            data = [sum(v for n, v in per_n.items() if n >= k) for k in range(1, k_max + 1)]
            labels = [f"{k} {unit_name}{'s' if k > 1 else ''} or more" for k in range(1, k_max + 1)]
        else:
            data = [per_n.get(k, 0) for k in range(1, k_max + 1)]
            labels = [f"{k} {unit_name}{'s' if k > 1 else ''}" for k in range(1, k_max + 1)]
        name = series.event or "All events"
        results.append({"data": data, "days": list(range(1, k_max + 1)), "labels": labels,
                        "count": sum(per_n.values()), "label": series.custom_name or name,
                        "action": {"id": series.event, "name": name, "order": i, "type": "events",
                                   "math": series.math}})
    return {"results": results, "kind": "StickinessQuery", "timezone": rng.tz.key}
