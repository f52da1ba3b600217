"""Trends: counts and aggregates of events per interval (spec analytics §1)."""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sightline.errors import InvalidInput
from sightline.query.context import QueryContext
from sightline.query.dates import Range, resolve, step
from sightline.query.filters import (NULL_SENTINEL, OTHER_SENTINEL, PERSON_ID, Scope, properties_sql,
                                     test_account_filters)
from sightline.query.model import EventsNode, TrendsQuery
from sightline.query.perf import local_time

TOTAL_DISPLAYS = {"BoldNumber", "ActionsBarValue", "ActionsTable", "ActionsPie", "WorldMap"}
QUANTILES = {"median": 0.5, "p75": 0.75, "p90": 0.9, "p95": 0.95, "p99": 0.99}
PROPERTY_MATHS = {"sum", "avg", "min", "max", *QUANTILES}
DEFAULT_BREAKDOWN_LIMIT = 25


@dataclass
class SeriesData:
    """One series' values per breakdown value: ``{bv: {bucket: value}}`` plus range totals."""

    values: dict[Any, dict[datetime, float]]
    totals: dict[Any, float]


def _actor(scope: Scope, series: EventsNode, q: TrendsQuery) -> str:
    index = series.math_group_type_index if series.math == "unique_group" else q.aggregation_group_type_index
    if index is not None:
        if not 0 <= index <= 4:
            raise InvalidInput("`math_group_type_index` must be between 0 and 4.", attr="math_group_type_index")
        return f"e.group_{index}"
    return PERSON_ID


def _where(ctx: QueryContext, scope: Scope, q: TrendsQuery, series: EventsNode, start: str, end: str) -> str:
    parts = [f"e.project_id = {scope.project}", f"e.timestamp >= {start}", f"e.timestamp <= {end}"]
    if series.event is not None:
        parts.append(f"e.event = {scope.params.add(series.event, 'event')}")
    parts.append(properties_sql(series.properties, scope))
    parts.append(properties_sql(q.properties, scope))
    if q.filterTestAccounts:
        parts.append(properties_sql(test_account_filters(ctx.settings), scope))
    return " AND ".join(p for p in parts if p != "true")


def _breakdown_expr(scope: Scope, q: TrendsQuery) -> str | None:
    bf = q.breakdownFilter
    if bf is None or bf.breakdown in (None, ""):
        return None
    kind = bf.breakdown_type or "event"
    if kind not in ("event", "person", "group", "session"):
        raise InvalidInput(f"Breakdowns of type {kind!r} are not supported yet.", attr="breakdown_type")
    expr = scope.prop(str(bf.breakdown), kind, bf.breakdown_group_type_index)
    null = scope.params.add(NULL_SENTINEL, "null")
    return f"coalesce(nullif({expr}, ''), {null})"


def _math_select(scope: Scope, series: EventsNode, q: TrendsQuery) -> tuple[str, bool]:
    """(aggregate expression, needs a per-actor inner query)."""
    d, m = scope.dialect, series.math
    if m == "total":
        return "count(*)", False
    if m in ("dau", "unique_group", "weekly_active", "monthly_active"):
        actor = _actor(scope, series, q)
        return d.count_distinct(actor), False
    if m == "unique_session":
        return d.count_distinct("nullif(e.session_id, '')"), False
    if m in PROPERTY_MATHS:
        if not series.math_property:
            raise InvalidInput(f"math {m!r} needs a `math_property`.", attr="math_property")
        value = d.to_number(scope.prop(series.math_property, "event"))
        if m in QUANTILES:
            return f"coalesce({d.quantile(value, QUANTILES[m])}, 0)", False
        return f"coalesce({m}({value}), 0)", False
    if m.endswith("_count_per_actor"):
        return "", True
    if m == "first_time_for_user":
        return "", True
    raise InvalidInput(f"Unsupported math {m!r}.", attr="math")


def _per_actor_outer(math: str, scope: Scope) -> str:
    kind = math.removesuffix("_count_per_actor")
    if kind in QUANTILES:
        return f"coalesce({scope.dialect.quantile('c', QUANTILES[kind])}, 0)"
    return f"coalesce({kind}(c), 0)"


def series_data(ctx: QueryContext, q: TrendsQuery, series: EventsNode, rng: Range, *,
                total: bool, cumulative: bool) -> SeriesData:
    scope = ctx.scope()
    d, params = scope.dialect, scope.params
    tz = params.add(rng.tz.key, "tz")
    math = series.math
    interval = rng.interval
    if math in ("weekly_active", "monthly_active") and interval in ("week", "month") and not total:
        math = "dau"
    if math == "monthly_active" and interval == "month":
        math = "dau"
    bd = _breakdown_expr(scope, q)
    bv_sel = bd if bd is not None else "NULL"
    local_ts = local_time(d, "e.timestamp", tz, rng.tz.key)
    bucket = d.trunc(interval, local_ts, ctx.week_start_monday) if not total else "NULL"

    start, end = params.add(rng.start, "start"), params.add(rng.end, "end")
    if math in ("weekly_active", "monthly_active"):
        days = 7 if math == "weekly_active" else 30
        unit = "hour" if interval in ("hour", "minute") else "day"
        active_from = params.add(rng.start - timedelta(days=days), "start")
        actor = _actor(scope, series, q)
        where = _where(ctx, scope, q, series, active_from, end)
        if total:
            anchor = d.trunc(unit, local_time(d, end, tz, rng.tz.key))
            body = (f"SELECT NULL AS bucket, {bv_sel} AS bv, {d.count_distinct(actor)} AS value "
                    f"FROM events e{{joins}} WHERE {where} AND {d.trunc(unit, local_ts)} > "
                    f"{anchor} - INTERVAL {days} DAY GROUP BY ALL")
        else:
            buckets = params.add([b for b in rng.buckets()], "buckets")
            body = (f"WITH active AS (SELECT DISTINCT {actor} AS actor, {bv_sel} AS bv, "
                    f"{d.trunc(unit, local_ts)} AS t FROM events e{{joins}} WHERE {where}), "
                    f"b AS (SELECT {d.unnest(buckets)} AS bucket) "
                    f"SELECT b.bucket, a.bv, {d.count_distinct('a.actor')} AS value FROM b JOIN active a "
                    f"ON a.t > b.bucket - INTERVAL {days} DAY AND a.t <= b.bucket GROUP BY ALL")
    else:
        where = _where(ctx, scope, q, series, start, end)
        agg, per_actor = _math_select(scope, series, q)
        if math == "first_time_for_user":
            actor = _actor(scope, series, q)
            all_where = _where(ctx, scope, q, series, params.add(datetime(1970, 1, 1, tzinfo=timezone.utc), "start"), end)
            first_bucket = d.trunc(interval, local_time(d, "first_ts", tz, rng.tz.key)) if not total else "NULL"
            body = (f"WITH firsts AS (SELECT {actor} AS actor, {d.arg_min(bv_sel, 'e.timestamp')} AS bv, "
                    f"min(e.timestamp) AS first_ts FROM events e{{joins}} WHERE {all_where} GROUP BY 1) "
                    f"SELECT {first_bucket} AS bucket, bv, count(*) AS value FROM firsts "
                    f"WHERE first_ts >= {start} AND first_ts <= {end} GROUP BY ALL")
        elif per_actor:
            actor = _actor(scope, series, q)
            body = (f"SELECT bucket, bv, {_per_actor_outer(math, scope)} AS value FROM ("
                    f"SELECT {bucket} AS bucket, {bv_sel} AS bv, {actor} AS actor, count(*) AS c "
                    f"FROM events e{{joins}} WHERE {where} GROUP BY ALL) GROUP BY ALL")
        elif cumulative and math in ("dau", "unique_group"):
            # each actor counts once, in the first bucket they appear in
            actor = _actor(scope, series, q)
            body = (f"SELECT bucket, bv, count(*) AS value FROM (SELECT {actor} AS actor, {bv_sel} AS bv, "
                    f"min({bucket}) AS bucket FROM events e{{joins}} WHERE {where} GROUP BY ALL) GROUP BY ALL")
        else:
            body = (f"SELECT {bucket} AS bucket, {bv_sel} AS bv, {agg} AS value "
                    f"FROM events e{{joins}} WHERE {where} GROUP BY ALL")
    body = body.replace("{joins}", scope.joins())

    if bd is not None:
        limit = params.add(q.breakdownFilter.breakdown_limit or DEFAULT_BREAKDOWN_LIMIT, "limit")
        null, other = params.add(NULL_SENTINEL, "null"), params.add(OTHER_SENTINEL, "other")
        other_case = f"CASE WHEN r.rk <= {limit} THEN a.bv ELSE {other} END"
        sql = (f"WITH a AS ({body}), r AS (SELECT bv, row_number() OVER (ORDER BY (bv = {null}) ASC, "
               f"sum(value) DESC, bv ASC) AS rk FROM a GROUP BY bv) "
               f"SELECT a.bucket, {other_case} AS bv, sum(a.value) AS value "
               f"FROM a JOIN r ON a.bv = r.bv GROUP BY ALL")
        if q.breakdownFilter.breakdown_hide_other_aggregation:
            sql = f"SELECT * FROM ({sql}) WHERE bv <> {other}"
    else:
        sql = body
    rows = ctx.execute(sql, params.values)
    values: dict[Any, dict[datetime, float]] = {}
    totals: dict[Any, float] = {}
    for bucket_value, bv, value in rows:
        v = float(value or 0)
        values.setdefault(bv, {})[bucket_value] = v
        totals[bv] = totals.get(bv, 0.0) + v
    return SeriesData(values, totals)


def _cohort_ids(q: TrendsQuery) -> list:
    raw = q.breakdownFilter.breakdown
    ids = raw if isinstance(raw, list) else [raw]
    out = []
    for cid in ids:
        if cid in ("all", 0, "0"):
            out.append(0)
            continue
        try:
            out.append(int(cid))
        except (TypeError, ValueError):
            raise InvalidInput(f"Cohort breakdowns take cohort ids (or \"all\"), not {cid!r}.", attr="breakdown") from None
    return out


def _series_data(ctx: QueryContext, q: TrendsQuery, series: EventsNode, rng: Range, *, total: bool,
                 cumulative: bool) -> SeriesData:
    """One series; a cohort breakdown runs it once per cohort (a person may be in several)."""
    bf = q.breakdownFilter
    if bf is None or bf.breakdown_type != "cohort" or bf.breakdown in (None, "", []):
        return series_data(ctx, q, series, rng, total=total, cumulative=cumulative)
    from sightline.query.model import PropertyFilter

    values: dict[Any, dict[datetime, float]] = {}
    totals: dict[Any, float] = {}
    for cid in _cohort_ids(q):
        extra = [] if cid == 0 else [PropertyFilter(type="cohort", key="id", value=cid)]
        props = list(series.properties or []) if isinstance(series.properties, list) or series.properties is None \
            else None
        if props is None:
            from sightline.query.model import PropertyGroup
            narrowed = series.model_copy(update={"properties": PropertyGroup(type="AND", values=[series.properties, *extra])})
        else:
            narrowed = series.model_copy(update={"properties": props + extra})
        one = series_data(ctx, q.model_copy(update={"breakdownFilter": None}), narrowed, rng, total=total,
                          cumulative=cumulative)
        values[cid] = one.values.get(None, {})
        totals[cid] = one.totals.get(None, 0.0)
    return SeriesData(values, totals)


# -- formulas ---------------------------------------------------------------------------------
_OPS: dict[type, Callable] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                              ast.Div: operator.truediv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def parse_formula(formula: str, n_series: int) -> Callable[[dict[str, float]], float]:
    """Letters A, B, … name series; + - * / % ** and numbers only. Division by zero gives 0."""
    try:
        tree = ast.parse(formula.upper().strip(), mode="eval")
    except SyntaxError:
        raise InvalidInput(f"Cannot read the formula {formula!r}.", attr="formula") from None

    def check(node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            check(node.body)
        elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            check(node.left)
            check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            check(node.operand)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            pass
        elif isinstance(node, ast.Name) and len(node.id) == 1 and 0 <= ord(node.id) - 65 < n_series:
            pass
        else:
            raise InvalidInput(f"The formula {formula!r} may only use series letters A–"
                               f"{chr(64 + n_series)}, numbers and + - * / % **.", attr="formula")

    check(tree)

    def ev(node: ast.AST, env: dict[str, float]) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body, env)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left, env), ev(node.right, env)
            if isinstance(node.op, (ast.Div, ast.Mod)) and b == 0:
                return 0.0
            try:
                out = _OPS[type(node.op)](a, b)
            except (OverflowError, ZeroDivisionError, ValueError):
                return 0.0
            return 0.0 if isinstance(out, complex) or math.isnan(out) or math.isinf(out) else float(out)
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand, env)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant):
            return float(node.value)
        return env.get(node.id, 0.0)

    return lambda env: ev(tree, env)


def smooth(data: list[float], n: int) -> list[float]:
    out = []
    for i in range(len(data)):
        window = data[max(0, i - n + 1): i + 1]
        out.append(float(math.floor(sum(window) / len(window))))
    return out


def _previous_range(q: TrendsQuery, rng: Range, ctx: QueryContext) -> Range:
    cf = q.compareFilter
    if cf and cf.compare_to:
        from sightline.query.dates import RELATIVE

        m = RELATIVE.match(cf.compare_to.strip())
        if not m:
            raise InvalidInput("`compare_to` must look like -1w, -7d or -1m.", attr="compare_to")
        n, unit = int(m.group(1)), m.group(2)
        shift = {"h": ("hour", n), "d": ("day", n), "w": ("week", n), "m": ("month", n),
                 "q": ("month", 3 * n), "y": ("month", 12 * n)}[unit]
        return Range(rng.tz, step(rng.local_from, shift[0], -shift[1]), step(rng.local_to, shift[0], -shift[1]),
                     rng.interval, rng.week_start_monday)
    # the same length just before, aligned to the day (hour for hourly intervals)
    length = rng.local_to - rng.local_from + timedelta(microseconds=1)
    prev_from = rng.local_from - length
    prev_from = prev_from.replace(minute=0, second=0, microsecond=0) if rng.interval in ("hour", "minute") \
        else prev_from.replace(hour=0, minute=0, second=0, microsecond=0)
    return Range(rng.tz, prev_from, rng.local_from - timedelta(microseconds=1), rng.interval,
                 rng.week_start_monday)


def run(ctx: QueryContext, q: TrendsQuery) -> dict:
    display = q.trendsFilter.display or "ActionsLineGraph"
    total = display in TOTAL_DISPLAYS
    cumulative = display == "ActionsLineGraphCumulative"
    earliest = ctx.earliest_event() if q.dateRange.date_from == "all" else None
    rng = resolve(q.dateRange.date_from, q.dateRange.date_to, interval=q.interval, tz=ctx.timezone,
                  now=ctx.now, earliest=earliest, explicit=q.dateRange.explicitDate,
                  week_start_monday=ctx.week_start_monday)
    periods = [("current", rng)]
    compare = bool(q.compareFilter and q.compareFilter.compare)
    if compare:
        periods.append(("previous", _previous_range(q, rng, ctx)))
    formulas = [f for f in (q.trendsFilter.formulas or ([q.trendsFilter.formula] if q.trendsFilter.formula else []))
                if f and f.strip()]
    results: list[dict] = []
    for compare_label, r in periods:
        buckets = r.buckets() if not total else []
        per_series = [_series_data(ctx, q, s, r, total=total, cumulative=cumulative) for s in q.series]
        out_series = []
        for i, (s, data) in enumerate(zip(q.series, per_series)):
            bvs = list(data.values) if q.breakdownFilter and q.breakdownFilter.breakdown not in (None, "") else [None]
            for bv in _order_breakdowns(bvs, data):
                out_series.append(_series_result(q, s, i, bv, data, buckets, r, total, cumulative, ctx))
        if formulas:
            out_series = [item for f in formulas
                          for item in _formula_result(f, q, per_series, buckets, r, total, cumulative)]
        for item in out_series:
            if compare:
                item["compare"] = True
                item["compare_label"] = compare_label
        results.extend(out_series)
    return {"results": results, "hasMore": any(item.get("breakdown_value") == OTHER_SENTINEL for item in results),
            "timezone": rng.tz.key, "kind": "TrendsQuery"}


def _order_breakdowns(bvs: list, data: SeriesData) -> list:
    def key(bv):
        demote = 2 if bv == OTHER_SENTINEL else (1 if bv == NULL_SENTINEL else 0)
        return (demote, -data.totals.get(bv, 0.0), str(bv))
    return sorted(bvs, key=key)


def _label(bv: Any, q: TrendsQuery | None = None, ctx: QueryContext | None = None) -> str:
    if q is not None and q.breakdownFilter and q.breakdownFilter.breakdown_type == "cohort":
        if bv == 0:
            return "All users"
        cohort = (ctx.cohorts if ctx else {}).get(bv)
        return cohort["name"] if cohort else f"Cohort {bv}"
    if bv == NULL_SENTINEL:
        return "None"
    if bv == OTHER_SENTINEL:
        return "Other"
    return str(bv)


def _finish(raw: list[float], q: TrendsQuery, cumulative: bool) -> list[float]:
    data = raw
    if cumulative:
        acc, data = 0.0, []
        for v in raw:
            acc += v
            data.append(acc)
    n = q.trendsFilter.smoothingIntervals
    if n > 1 and not cumulative:
        data = smooth(data, n)
    return [int(v) if float(v).is_integer() else v for v in data]


def _base(q: TrendsQuery, s: EventsNode, i: int, r: Range, buckets: list[datetime]) -> dict:
    name = s.event if s.event is not None else "All events"
    return {
        "action": {"id": s.event, "type": "events", "order": i, "name": name, "custom_name": s.custom_name,
                   "math": s.math, "math_property": s.math_property},
        "label": s.custom_name or name,
        "labels": [r.pretty(b) for b in buckets],
        "days": [r.label(b) for b in buckets],
    }


def _series_result(q, s, i, bv, data: SeriesData, buckets, r, total, cumulative, ctx=None) -> dict:
    out = _base(q, s, i, r, buckets)
    if bv is not None:
        out["breakdown_value"] = bv
        out["label"] = _label(bv, q, ctx)
    per_bucket = data.values.get(bv, {})
    if total:
        value = per_bucket.get(None, 0.0)
        out.update({"data": [], "count": 0, "aggregated_value": int(value) if float(value).is_integer() else value})
        return out
    raw = [per_bucket.get(b, 0.0) for b in buckets]
    out["data"] = _finish(raw, q, cumulative)
    out["count"] = out["data"][-1] if cumulative and out["data"] else sum(raw)
    if isinstance(out["count"], float) and out["count"].is_integer():
        out["count"] = int(out["count"])
    return out


def _formula_result(formula: str, q: TrendsQuery, per_series: list[SeriesData], buckets, r, total,
                    cumulative) -> list[dict]:
    fn = parse_formula(formula, len(q.series))
    bvs: list = []
    for data in per_series:
        for bv in data.values:
            if bv not in bvs:
                bvs.append(bv)
    if not bvs:
        bvs = [None]
    out = []
    for bv in bvs:
        item = {"action": None, "label": f"Formula ({formula})", "labels": [r.pretty(b) for b in buckets],
                "days": [r.label(b) for b in buckets]}
        if bv is not None:
            item["breakdown_value"] = bv
        envs = []
        keys = [None] if total else buckets
        for b in keys:
            envs.append({chr(65 + i): data.values.get(bv, {}).get(b, 0.0) for i, data in enumerate(per_series)})
        values = [fn(env) for env in envs]
        if total:
            item.update({"data": [], "count": 0, "aggregated_value": values[0]})
        else:
            item["data"] = _finish(values, q, cumulative)
            item["count"] = item["data"][-1] if cumulative and item["data"] else sum(values)
        out.append(item)
    return out
