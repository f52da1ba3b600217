"""Retention cohorts (spec analytics §3): who came back, per starting interval."""

from __future__ import annotations

from datetime import timedelta

from sightline.errors import InvalidInput
from sightline.query.context import QueryContext
from sightline.query.dates import Range, resolve, step, trunc
from sightline.query.filters import NULL_SENTINEL, OTHER_SENTINEL, PERSON_ID, Scope, properties_sql, \
    test_account_filters
from sightline.query.model import RetentionEntity, RetentionQuery
from sightline.query.perf import local_time

PERIOD_UNIT = {"Hour": "hour", "Day": "day", "Week": "week", "Month": "month"}


def _entity_condition(scope: Scope, entity: RetentionEntity) -> str:
    parts = []
    if entity.type != "events":
        raise InvalidInput("Retention on actions is not supported yet; use events.", attr="type")
    if entity.event:
        parts.append(f"e.event = {scope.params.add(entity.event, 'event')}")
    cond = properties_sql(entity.properties, scope)
    if cond != "true":
        parts.append(cond)
    return "(" + " AND ".join(parts) + ")" if parts else "true"


def cohort_range(ctx: QueryContext, q: RetentionQuery) -> Range:
    unit = PERIOD_UNIT[q.retentionFilter.period]
    # only date_to matters: the cohorts are the totalIntervals periods ending with it
    base = resolve(q.dateRange.date_to or "dStart", q.dateRange.date_to, interval=unit, tz=ctx.timezone, now=ctx.now,
                   explicit=q.dateRange.explicitDate, week_start_monday=ctx.week_start_monday)
    end_excl = step(trunc(base.local_to, unit, ctx.week_start_monday), unit)
    start = step(end_excl, unit, -q.retentionFilter.totalIntervals)
    return Range(base.tz, start, end_excl - timedelta(microseconds=1), unit, ctx.week_start_monday)


def build(ctx: QueryContext, q: RetentionQuery):
    """The cohort CTEs: s(actor, cohort) starts, r(actor, b) returns, k(cohort, actor, k) returns by period."""
    rf = q.retentionFilter
    unit = PERIOD_UNIT[rf.period]
    rng = cohort_range(ctx, q)
    scope = ctx.scope()
    d, p = scope.dialect, scope.params
    tz = p.add(rng.tz.key, "tz")
    start, end = p.add(rng.start, "start"), p.add(rng.end, "end")
    index = q.aggregation_group_type_index
    actor = f"e.group_{index}" if index is not None else PERSON_ID
    bucket = d.trunc(unit, local_time(d, "e.timestamp", tz, rng.tz.key), ctx.week_start_monday)
    global_cond = properties_sql(q.properties, scope)
    if q.filterTestAccounts:
        global_cond = f"{global_cond} AND {properties_sql(test_account_filters(ctx.settings), scope)}"
    target = _entity_condition(scope, rf.targetEntity)
    returning = _entity_condition(scope, rf.returningEntity)
    base_where = f"e.project_id = {scope.project} AND {global_cond}"
    if index is not None:
        base_where += f" AND nullif(e.group_{index}, '') IS NOT NULL"
    bf = q.breakdownFilter
    if bf is not None and bf.breakdown not in (None, "", []):
        kind = bf.breakdown_type or "event"
        if kind not in ("event", "person", "group", "session"):
            raise InvalidInput(f"Retention breakdowns of type {kind!r} are not supported.", attr="breakdown_type")
        bv = (f"coalesce(nullif({scope.prop(str(bf.breakdown), kind, bf.breakdown_group_type_index)}, ''), "
              f"{p.add(NULL_SENTINEL, 'null')})")
    else:
        bv = "''"
    joins = scope.joins()
    if rf.retentionType == "retention_recurring":
        starts = (f"SELECT DISTINCT {actor} AS actor, {bucket} AS cohort, {bv} AS bv FROM events e{joins} "
                  f"WHERE {base_where} AND {target} AND e.timestamp >= {start} AND e.timestamp <= {end}")
    else:
        # first time: the actor's first-ever start event decides the cohort (it must be in range)
        first_cond = target
        if rf.retentionType == "retention_first_ever_occurrence" and rf.targetEntity.event:
            first_cond = f"e.event = {p.add(rf.targetEntity.event, 'event')}"
        starts = (f"SELECT actor, cohort, bv FROM (SELECT {actor} AS actor, "
                  f"{d.trunc(unit, local_time(d, 'min(e.timestamp)', tz, rng.tz.key), ctx.week_start_monday)} AS cohort, "
                  f"{d.arg_min(bv, 'e.timestamp')} AS bv, "
                  f"{d.arg_min(target, 'e.timestamp')} AS ok FROM events e{joins} WHERE {base_where} AND {first_cond} "
                  f"AND e.timestamp <= {end} GROUP BY 1) "
                  f"WHERE cohort >= {local_time(d, start, tz, rng.tz.key)} AND ok")
    returns = (f"SELECT DISTINCT {actor} AS actor, {bucket} AS b, {bv} AS bv FROM events e{joins} "
               f"WHERE {base_where} AND {returning} AND e.timestamp >= {start} AND e.timestamp <= {end}")
    diff = d.period_diff(unit, "s.cohort", "r.b")
    ctes = (f"WITH s AS ({starts}), r AS ({returns}), "
            f"k AS (SELECT s.cohort, s.actor, s.bv, {diff} AS k FROM s JOIN r ON r.actor = s.actor "
            f"AND r.bv = s.bv AND r.b > s.cohort) ")
    return ctes, p, rng, unit


def run(ctx: QueryContext, q: RetentionQuery) -> dict:
    rf = q.retentionFilter
    fast = _rows_from_masks(ctx, q)
    if fast is not None:
        rows, rng, unit = fast
    else:
        ctes, p, rng, unit = build(ctx, q)
        sql = (ctes +
               "SELECT cohort, NULL AS k, bv, count(DISTINCT actor) FROM s GROUP BY cohort, bv "
               "UNION ALL SELECT cohort, k, bv, count(DISTINCT actor) FROM k GROUP BY cohort, k, bv "
               + ("UNION ALL SELECT cohort, -1 - m, bv, count(*) FROM (SELECT cohort, actor, bv, max(k) AS m FROM k "
                  "GROUP BY ALL) GROUP BY cohort, m, bv" if rf.cumulative else ""))
        rows = ctx.execute(sql, p.values)
    sizes: dict[tuple, int] = {}
    cells: dict[tuple, int] = {}
    maxes: dict[tuple, int] = {}
    for cohort, k, bv, n in rows:
        if k is None:
            sizes[(cohort, bv)] = int(n)
        elif k < 0:
            maxes[(cohort, bv, -1 - int(k))] = int(n)
        else:
            cells[(cohort, bv, int(k))] = int(n)
    values_seen = sorted({bv for (_, bv) in sizes}, key=lambda v: (v == NULL_SENTINEL, -sum(
        n for (c, b), n in sizes.items() if b == v), str(v)))
    has_bd = q.breakdownFilter is not None and q.breakdownFilter.breakdown not in (None, "", [])
    limit = (q.breakdownFilter.breakdown_limit or 25) if has_bd else None
    groups: dict = {}
    for i, v in enumerate(values_seen or [""]):
        key = v if limit is None or i < limit else OTHER_SENTINEL
        groups.setdefault(key, []).append(v)
    label = {"hour": "Hour", "day": "Day", "week": "Week", "month": "Month"}[unit]
    cohorts = [step(rng.local_from, unit, i) for i in range(rf.totalIntervals)]
    results = []
    for key, members in groups.items():
        for i, cohort in enumerate(cohorts):
            size = sum(sizes.get((cohort, v), 0) for v in members)
            values = []
            for k in range(rf.totalIntervals):
                if k == 0:
                    count = size
                elif i + k >= rf.totalIntervals:
                    count = 0
                elif rf.cumulative:
                    count = sum(n for (c, b, m), n in maxes.items() if c == cohort and b in members and m >= k)
                else:
                    count = sum(cells.get((cohort, v, k), 0) for v in members)
                values.append({"count": count, "label": f"{label} {k}"})
            row = {"label": f"{label} {i}", "date": cohort.isoformat(), "values": values}
            if has_bd:
                row["breakdown_value"] = key
            results.append(row)
    return {"results": results, "kind": "RetentionQuery", "timezone": rng.tz.key}


# Periods up to which recurring retention uses one bit per period (DuckDB); tests set 0 to compare
MASK_PERIODS_MAX = 62
_UNIT_US = {"hour": 3_600_000_000, "day": 86_400_000_000, "week": 7 * 86_400_000_000}


def _rows_from_masks(ctx: QueryContext, q: RetentionQuery):
    """Recurring retention without breakdown or groups (DuckDB): ``(rows, rng, unit)`` in the
    shape of :func:`run`'s SQL (cohort, k or NULL or -1 - max k, '', actors), or ``None``.

    Per actor, bit i of ``sm`` is set when it did the start event in period i (a ``GROUP BY
    actor`` over the start events), and of ``rm`` when it returned then (over the return events
    of those actors only: a semi-join, no DISTINCT over (actor, period) pairs, no range join).
    Actors are grouped by (sm, rm) and the cells are sums over those patterns: cohort c has
    the actors with bit c of sm; its cell k those with bit c + k of rm as well; cumulatively,
    those with any bit of rm from c + k on. No DISTINCT over (actor, period) pairs, no join."""
    from sightline.query.perf import UTC_NAMES

    rf = q.retentionFilter
    bf = q.breakdownFilter
    if (ctx.dialect.name != "duckdb" or rf.retentionType != "retention_recurring"
            or q.aggregation_group_type_index is not None
            or (bf is not None and bf.breakdown not in (None, "", []))
            or rf.totalIntervals > MASK_PERIODS_MAX):
        return None
    unit = PERIOD_UNIT[rf.period]
    rng = cohort_range(ctx, q)
    scope = ctx.scope()
    d, p = scope.dialect, scope.params
    tz = p.add(rng.tz.key, "tz")
    start, end = p.add(rng.start, "start"), p.add(rng.end, "end")
    if unit in _UNIT_US and rng.tz.key in UTC_NAMES:
        origin_us = int(rng.local_from.replace(tzinfo=rng.tz).timestamp()) * 1_000_000
        idx = f"((epoch_us(e.timestamp) - {p.add(origin_us, 'origin_us')}) // {_UNIT_US[unit]})"
    else:
        bucket = d.trunc(unit, local_time(d, "e.timestamp", tz, rng.tz.key), ctx.week_start_monday)
        idx = d.period_diff(unit, f"CAST({p.add(rng.local_from, 'origin')} AS TIMESTAMP)", bucket)
    cond = properties_sql(q.properties, scope)
    if q.filterTestAccounts:
        cond = f"{cond} AND {properties_sql(test_account_filters(ctx.settings), scope)}"
    target = _entity_condition(scope, rf.targetEntity)
    returning = _entity_condition(scope, rf.returningEntity)
    n = rf.totalIntervals
    source = (f"FROM events e{scope.joins()} WHERE e.project_id = {scope.project} AND {cond} "
              f"AND e.timestamp >= {start} AND e.timestamp <= {end}")
    # returns only of actors with a start (a semi-join: most actors never start)
    sql = (f"WITH s AS (SELECT {PERSON_ID} AS actor, bit_or(1::BIGINT << {idx}) AS sm {source} AND {target} "
           f"GROUP BY 1), "
           f"r AS (SELECT {PERSON_ID} AS actor, bit_or(1::BIGINT << {idx}) AS rm {source} AND {returning} "
           f"AND {PERSON_ID} IN (SELECT actor FROM s) GROUP BY 1), "
           "t AS (SELECT sm, coalesce(rm, 0) AS rm, count(*) AS cnt FROM s LEFT JOIN r ON r.actor = s.actor "
           "GROUP BY ALL) SELECT "
           + ", ".join([f"sum(cnt * ((sm >> {c}) & 1))" for c in range(n)]
                       + [f"sum(cnt * ((sm >> {c}) & (rm >> {c + k}) & 1))" for c in range(n) for k in range(1, n - c)]
                       + [f"sum(cnt * ((sm >> {c}) & 1) * ((rm >> {c + k}) <> 0)::INT)"
                          for c in range(n) for k in range(1, n - c)])
           + " FROM t")
    [row] = ctx.execute(sql, p.values)
    vals = iter(int(v or 0) for v in row)
    cohorts = [step(rng.local_from, unit, c) for c in range(n)]
    out = [(cohorts[c], None, "", next(vals)) for c in range(n)]
    cells = {(c, k): next(vals) for c in range(n) for k in range(1, n - c)}
    cumulative = {(c, k): next(vals) for c in range(n) for k in range(1, n - c)}
    out += [(cohorts[c], k, "", v) for (c, k), v in cells.items() if v]
    if rf.cumulative:  # actors by their last return (max k): at least k minus at least k + 1
        out += [(cohorts[c], -1 - k, "", v - cumulative.get((c, k + 1), 0))
                for (c, k), v in cumulative.items() if v - cumulative.get((c, k + 1), 0)]
    return out, rng, unit
