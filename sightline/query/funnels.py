"""Funnels (spec analytics §2), computed column-wise in SQL.

The per-actor algorithm of PostHog's funnel UDF, restated so a columnar engine can run it:

* every step-1 event starts an *attempt*; an attempt advances greedily to the **next** event of
  the next step (an ASOF join on the actor's event sequence), and counts a step only while it is
  within the conversion window measured from its step-1 event;
* an attempt is *excluded* when an exclusion event falls between the steps it covers before the
  attempt moved past them;
* per actor, the furthest step reached by any attempt wins; among attempts reaching it, the one
  that got there first (then the one that started last) gives the conversion times. If only
  excluded attempts reach that far, the actor is left out of the funnel entirely.

Events are ordered by (timestamp, first step they match, uuid), so one event never fills two
steps and events sharing a timestamp are taken in step order. Strict funnels require the next
step to be the actor's very next event; unordered funnels count the most distinct steps seen
within one window.

Ordered funnels whose steps are distinct events (no exclusions, no breakdown, not funnel
trends) take a fast path on DuckDB, ``funnel_fast.py``: hash joins over the step events find
the same winning attempts without ordering anyone's events.
"""

from __future__ import annotations

import math

from sightline.errors import InvalidInput
from sightline.query import funnel_fast
from sightline.query.context import QueryContext
from sightline.query.dates import resolve
from sightline.query.filters import NULL_SENTINEL, OTHER_SENTINEL, PERSON_ID, Scope, properties_sql, \
    test_account_filters
from sightline.query.model import EventsNode, FunnelsQuery
from sightline.query.perf import local_time

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 31 * 86400}
DEFAULT_BREAKDOWN_LIMIT = 25


def _step_condition(scope: Scope, node: EventsNode) -> str:
    parts = []
    if node.event is not None:
        parts.append(f"e.event = {scope.params.add(node.event, 'event')}")
    cond = properties_sql(node.properties, scope)
    if cond != "true":
        parts.append(cond)
    return "(" + " AND ".join(parts) + ")" if parts else "true"


def _validate(q: FunnelsQuery) -> None:
    f = q.funnelsFilter
    n = len(q.series)
    for x in f.exclusions:
        if not x.funnelFromStep < x.funnelToStep <= n - 1:
            raise InvalidInput("An exclusion's funnelFromStep must be less than funnelToStep, within the steps.",
                               attr="exclusions")
        if f.funnelOrderType == "unordered":
            raise InvalidInput("Unordered funnels do not support exclusions.", attr="exclusions")
        for i in range(x.funnelFromStep, x.funnelToStep + 1):
            s = q.series[i]
            if s.event == x.event and not s.properties and not x.properties:
                raise InvalidInput(f"Exclusion {x.event!r} is also step {i + 1} of the funnel.", attr="exclusions")
    if f.breakdownAttributionType == "step":
        if f.breakdownAttributionValue is None or not 0 <= f.breakdownAttributionValue < n:
            raise InvalidInput("Step attribution needs `breakdownAttributionValue`, a step index.",
                               attr="breakdownAttributionValue")


class FunnelSQL:
    """Builds the per-actor funnel relation for one query."""

    def __init__(self, ctx: QueryContext, q: FunnelsQuery) -> None:
        _validate(q)
        self.ctx, self.q = ctx, q
        self.scope = ctx.scope()
        self.n = len(q.series)
        f = q.funnelsFilter
        self.window = f.funnelWindowInterval * UNIT_SECONDS[f.funnelWindowIntervalUnit]
        earliest = ctx.earliest_event() if q.dateRange.date_from == "all" else None
        self.range = resolve(q.dateRange.date_from, q.dateRange.date_to, interval=q.interval, tz=ctx.timezone,
                             now=ctx.now, earliest=earliest, explicit=q.dateRange.explicitDate,
                             week_start_monday=ctx.week_start_monday)
        self.order = f.funnelOrderType
        # funnel trends count every start's bucket, so they keep dominated starts
        self.prune_starts = f.funnelVizType != "trends"

    # -- pieces ---------------------------------------------------------------------------
    def actor(self) -> str:
        index = self.q.aggregation_group_type_index
        return f"e.group_{index}" if index is not None else PERSON_ID

    def breakdown(self) -> str | None:
        bf = self.q.breakdownFilter
        if bf is None or bf.breakdown in (None, ""):
            return None
        kind = bf.breakdown_type or "event"
        if kind not in ("event", "person", "group"):
            raise InvalidInput(f"Breakdowns of type {kind!r} are not supported yet.", attr="breakdown_type")
        return self.scope.prop(str(bf.breakdown), kind, bf.breakdown_group_type_index)

    def events_cte(self) -> str:
        """Funnel events of each actor, in order, with step and exclusion flags."""
        s, p = self.scope, self.scope.params
        steps = [_step_condition(s, node) for node in self.q.series]
        excl = [_step_condition(s, EventsNode(event=x.event, properties=x.properties))
                for x in self.q.funnelsFilter.exclusions]
        where = [f"e.project_id = {s.project}", f"e.timestamp >= {p.add(self.range.start, 'start')}",
                 f"e.timestamp <= {p.add(self.range.end, 'end')}",
                 properties_sql(self.q.properties, s)]
        if self.q.filterTestAccounts:
            where.append(properties_sql(test_account_filters(self.ctx.settings), s))
        if self.order != "strict":  # strict funnels look at every event of the actor
            where.append("(" + " OR ".join(steps + excl) + ")")
        if self.q.aggregation_group_type_index is not None:
            where.append(f"nullif(e.group_{self.q.aggregation_group_type_index}, '') IS NOT NULL")
        first_step = "CASE " + " ".join(f"WHEN {c} THEN {i}" for i, c in enumerate(steps, 1)) + f" ELSE {self.n + 1} END"
        bd = self.breakdown()
        cols = [f"{self.actor()} AS actor", "e.timestamp AS ts", "e.uuid AS uuid", f"{first_step} AS first_step"]
        cols += [f"coalesce({c}, false) AS s{i}" for i, c in enumerate(steps, 1)]
        cols += [f"coalesce({c}, false) AS x{i}" for i, c in enumerate(excl)]
        cols.append(f"nullif({bd}, '') AS bv" if bd else "NULL AS bv")
        body = (f"SELECT {', '.join(cols)} FROM events e{s.joins()} "
                f"WHERE {' AND '.join(w for w in where if w != 'true')}")
        return body

    def candidates_cte(self) -> str | None:
        """Actors with an event of step 2 or later (or of an exclusion), from a scan of their own.

        Only they can get past step 1 (or be excluded): every other actor with a step-1 event
        has reached step 1 and nothing more, which a GROUP BY tells without ordering their
        events. Later steps are usually rare events, so this scan is narrow (Parquet parts are
        sorted by event: it skips most row groups) and the ordering that follows handles a
        fraction of the rows. ``None`` when every actor needs the ordering (funnel trends count
        every start; a one-step funnel has no later steps)."""
        if not self.prune_starts or self.n < 2:
            return None
        s = self.scope
        later = [_step_condition(s, node) for node in self.q.series[1:]]
        later += [_step_condition(s, EventsNode(event=x.event, properties=x.properties))
                  for x in self.q.funnelsFilter.exclusions]
        where = self._base_where() + ["(" + " OR ".join(later) + ")"]
        return (f"SELECT DISTINCT {self.actor()} AS actor FROM events e{s.joins()} "
                f"WHERE {' AND '.join(w for w in where if w != 'true')}")

    def _base_where(self) -> list[str]:
        """The conditions every funnel event meets: project, date range, filters, group actor."""
        s, p = self.scope, self.scope.params
        where = [f"e.project_id = {s.project}", f"e.timestamp >= {p.add(self.range.start, 'start')}",
                 f"e.timestamp <= {p.add(self.range.end, 'end')}", properties_sql(self.q.properties, s)]
        if self.q.filterTestAccounts:
            where.append(properties_sql(test_account_filters(self.ctx.settings), s))
        if self.q.aggregation_group_type_index is not None:
            where.append(f"nullif(e.group_{self.q.aggregation_group_type_index}, '') IS NOT NULL")
        return where

    def step_events_sql(self, i: int) -> str:
        """(actor, ts) of the events of step ``i`` (0-based), for the fast path (funnel_fast.py)."""
        cond = _step_condition(self.scope, self.q.series[i])
        where = self._base_where() + [cond]
        return (f"SELECT {self.actor()} AS actor, e.timestamp AS ts FROM events e{self.scope.joins()} "
                f"WHERE {' AND '.join(w for w in where if w != 'true')}")

    def actors_sql(self) -> str:
        """One row per (actor, breakdown value): steps reached (0-based) and step timestamps."""
        if funnel_fast.applies(self):
            return funnel_fast.actors_sql(self)
        q, n, win = self.q, self.n, self.window
        d = self.scope.dialect
        attribution = q.funnelsFilter.breakdownAttributionType
        has_bd = self.breakdown() is not None
        part = "actor, bv_key" if (has_bd and attribution == "all_events") else "actor"
        ctes = [f"raw AS ({self.events_cte()})"]
        if has_bd and attribution in ("first_touch", "last_touch"):
            agg = d.arg_min("bv", "ts") if attribution == "first_touch" else d.arg_max("bv", "ts")
            ctes.append(f"bvs AS (SELECT actor, {agg} FILTER (WHERE bv IS NOT NULL) AS bv_key FROM raw GROUP BY actor)")
            ctes.append("ev0 AS (SELECT raw.*, bvs.bv_key FROM raw JOIN bvs USING (actor))")
        elif has_bd and attribution == "all_events":
            ctes.append("ev0 AS (SELECT raw.*, bv AS bv_key FROM raw WHERE bv IS NOT NULL)")
        elif has_bd and attribution == "step":
            k = q.funnelsFilter.breakdownAttributionValue + 1
            ctes.append(f"bvs AS (SELECT DISTINCT actor, bv AS bv_key FROM raw WHERE s{k} AND bv IS NOT NULL)")
            # an event fills step k only if its own value is the candidate value
            ctes.append(f"ev0 AS (SELECT raw.* REPLACE (s{k} AND {d.not_distinct('raw.bv', 'bvs.bv_key')} AS s{k}), "
                        f"bvs.bv_key FROM raw JOIN bvs USING (actor))")
            part = "actor, bv_key"
        else:
            ctes.append("ev0 AS (SELECT raw.*, NULL AS bv_key FROM raw)")
        part = part.replace("bv_key", "bk")
        ctes.append(f"evb AS (SELECT {d.except_columns('*', ['bv_key'])}, coalesce({d.to_text('bv_key')}, '') AS bk "
                    f"FROM ev0)")
        cand = self.candidates_cte()
        ordered = "evb"
        if cand is not None:
            # only actors that may get past step 1 go through the ordering (see candidates_cte);
            # the others reach step 1 in every (actor, breakdown value) with a step-1 event
            ordered = f"(SELECT * FROM evb WHERE actor IN ({cand}))"
            ctes.append(f"rest AS (SELECT actor, bk, max(ts) AS t1 FROM evb "
                        f"WHERE s1 AND actor NOT IN ({cand}) GROUP BY actor, bk)")
        # one sort of the actor's events gives both the sequence number and, for pruning starts,
        # whether the next event is another start (s2 is s1 for one-step inputs that never prune)
        nxt_start = "lead(s1 AND NOT s2) OVER w" if n > 1 else "false"
        ctes.append(f"ev AS (SELECT *, row_number() OVER w AS q, {nxt_start} AS dominated FROM {ordered} "
                    f"WINDOW w AS (PARTITION BY {part} ORDER BY ts, first_step, uuid))")
        on = "c.actor = n.actor" + (" AND c.bk = n.bk" if part != "actor" else "")
        if self.order == "unordered":
            return self._unordered(ctes, part, cand is not None)
        strict = self.order == "strict"
        if strict:
            # Strict: an attempt at step k survives events that repeat step k; the first event
            # after it that is not another step k (or that is step k+1) must be step k+1.
            nxs = ", ".join(f"min(CASE WHEN s{k + 1} OR NOT s{k} THEN q END) OVER (PARTITION BY {part} ORDER BY q "
                            f"ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS nx{k}" for k in range(1, n))
            ctes.append(f"evs AS (SELECT *, {nxs} FROM ev)")
        src = "evs" if strict else "ev"
        if strict or not self.prune_starts:
            ctes.append(f"c1 AS (SELECT actor, bk, q AS q1, ts AS t1{', nx1' if strict and n > 1 else ''} "
                        f"FROM {src} WHERE s1)")
        else:
            # A start followed by another start (that is not also step 2) can never beat it: the
            # later one sees the same events with more window left. Dropping them keeps the joins
            # small when step 1 is a frequent event such as $pageview.
            ctes.append("c1 AS (SELECT actor, bk, q AS q1, ts AS t1 FROM ev WHERE s1 AND NOT coalesce(dominated, false))")
        for k in range(2, n + 1):
            extra = f", nx{k}" if strict and k < n else ""
            ctes.append(f"s{k}_ AS (SELECT actor, bk, q, ts{extra} FROM {src} WHERE s{k})")
            if strict:
                join = f"LEFT JOIN s{k}_ n ON {on} AND n.q = c.nx{k - 1}"
            else:
                join = f"ASOF LEFT JOIN s{k}_ n ON {on} AND n.q > c.q{k - 1}"
            ok = f"n.ts IS NOT NULL AND c.t{k - 1} IS NOT NULL AND {d.epoch('n.ts')} - {d.epoch('c.t1')} <= {win}"
            carry = f", CASE WHEN {ok} THEN n.nx{k} END AS nx{k}" if strict and k < n else ""
            ctes.append(f"c{k} AS (SELECT c.*, CASE WHEN {ok} THEN n.q END AS q{k}, "
                        f"CASE WHEN {ok} THEN n.ts END AS t{k}{carry} FROM c{k - 1} c {join})")
        last = f"c{n}"
        reached = " + ".join(f"(t{k} IS NOT NULL)::INT" for k in range(2, n + 1)) or "0"
        # exclusions: an exclusion event after step `from` and before the attempt reached step `to`
        excl_terms = []
        for i, x in enumerate(q.funnelsFilter.exclusions):
            a, b = x.funnelFromStep + 1, x.funnelToStep + 1
            ctes.append(f"x{i}_ AS (SELECT actor, bk, q, ts FROM ev WHERE x{i})")
            ctes.append(f"cx{i} AS (SELECT c.*, n.q AS xq{i}, n.ts AS xt{i} FROM "
                        f"{last} c ASOF LEFT JOIN x{i}_ n ON {on} AND n.q > c.q{a})")
            last = f"cx{i}"
            excl_terms.append(f"(q{a} IS NOT NULL AND xq{i} IS NOT NULL AND "
                              f"(CASE WHEN q{b} IS NOT NULL THEN xq{i} < q{b} "
                              f"ELSE {d.epoch(f'xt{i}')} - {d.epoch('t1')} <= {win} END))")
        excluded = " OR ".join(excl_terms) or "false"
        ts_cols = ", ".join(f"t{k}" for k in range(1, n + 1))
        ctes.append(f"attempts AS (SELECT actor, bk, {ts_cols}, {reached} AS reached, ({excluded}) AS excluded "
                    f"FROM {last})")
        # the furthest step; first to get there; then the latest start
        reach_ts = "CASE reached " + " ".join(f"WHEN {k - 1} THEN t{k}" for k in range(1, n + 1)) + " END"
        ctes.append(f"ranked AS (SELECT *, "
                    f"row_number() OVER (PARTITION BY actor, bk ORDER BY reached DESC, excluded ASC, "
                    f"{reach_ts} ASC, t1 DESC) AS rk FROM attempts)")
        ctes.append(f"actors AS (SELECT actor, nullif(bk, '') AS bv_key, reached, {ts_cols} FROM ranked "
                    f"WHERE rk = 1 AND NOT excluded{self._rest_rows(cand is not None)})")
        return "WITH " + ", ".join(ctes)

    def _rest_rows(self, split: bool, t1: str = "t1") -> str:
        """The actors that never left step 1 (``rest``), as rows of ``actors``."""
        if not split:
            return ""
        nulls = "".join(f", {self.scope.dialect.null_timestamp()} AS t{k}" for k in range(2, self.n + 1))
        return f" UNION ALL SELECT actor, nullif(bk, '') AS bv_key, 0 AS reached, {t1} AS t1{nulls} FROM rest"

    def _unordered(self, ctes: list[str], part: str, split: bool = False) -> str:
        n, win = self.n, self.window
        d = self.scope.dialect
        lasts = ", ".join(f"max(CASE WHEN s{k} THEN ts END) OVER w AS l{k}" for k in range(1, n + 1))
        ctes.append(f"lasts AS (SELECT actor, bk, ts, {lasts} FROM ev "
                    f"WINDOW w AS (PARTITION BY {part} ORDER BY q ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))")
        done = " + ".join(f"(l{k} IS NOT NULL AND {d.epoch('ts')} - {d.epoch(f'l{k}')} <= {win})::INT"
                          for k in range(1, n + 1))
        ctes.append(f"anchors AS (SELECT actor, bk, ts, ({done}) AS completed FROM lasts)")
        ts_cols = ", ".join(f"{d.null_timestamp()} AS t{k}" for k in range(1, n + 1))
        rest = self._rest_rows(split, d.null_timestamp())
        ctes.append(f"actors AS (SELECT actor, nullif(bk, '') AS bv_key, max(completed) - 1 AS reached, {ts_cols} "
                    f"FROM anchors GROUP BY actor, bk HAVING max(completed) > 0{rest})")
        return "WITH " + ", ".join(ctes)


def _breakdown_rank(sql_with: str, n: int, limit_param: str, other_param: str, null_param: str) -> str:
    """Fold breakdown values beyond the limit into Other, ranked by last-step count."""
    return (f"{sql_with}, a2 AS (SELECT *, coalesce(bv_key, {null_param}) AS bvv FROM actors), "
            f"r AS (SELECT bvv, row_number() OVER (ORDER BY (bvv = {null_param}) ASC, "
            f"count(*) FILTER (WHERE reached >= {n - 1}) DESC, count(*) DESC, bvv ASC) AS rk FROM a2 GROUP BY bvv), "
            f"final AS (SELECT a2.*, CASE WHEN r.rk <= {limit_param} THEN a2.bvv ELSE {other_param} END AS bd "
            f"FROM a2 JOIN r USING (bvv))")


def run(ctx: QueryContext, q: FunnelsQuery) -> dict:
    f = FunnelSQL(ctx, q)
    viz = q.funnelsFilter.funnelVizType
    if viz == "trends":
        return _trends(ctx, q, f)
    if viz == "time_to_convert":
        return _time_to_convert(ctx, q, f)
    return _steps(ctx, q, f)


def _final(f: FunnelSQL) -> tuple[str, bool]:
    base = f.actors_sql()
    p = f.scope.params
    if f.breakdown() is None:
        return base + ", final AS (SELECT *, NULL AS bd FROM actors)", False
    limit = p.add((f.q.breakdownFilter.breakdown_limit or DEFAULT_BREAKDOWN_LIMIT), "limit")
    return _breakdown_rank(base, f.n, limit, p.add(OTHER_SENTINEL, "other"), p.add(NULL_SENTINEL, "null")), True


def _steps(ctx: QueryContext, q: FunnelsQuery, f: FunnelSQL) -> dict:
    n = f.n
    d = ctx.dialect
    prepare = None
    if funnel_fast.applies(f):
        (sql, prepare), has_bd = funnel_fast.steps_plan(f), False
    else:
        sql_with, has_bd = _final(f)
        counts = ", ".join(f"count(*) FILTER (WHERE reached >= {k})" for k in range(n))
        avgs = ", ".join(f"avg({d.epoch(f't{k + 1}')} - {d.epoch(f't{k}')}) FILTER (WHERE reached >= {k})"
                         for k in range(1, n))
        meds = ", ".join(f"{d.median(d.epoch(f't{k + 1}') + ' - ' + d.epoch(f't{k}'))} FILTER (WHERE reached >= {k})"
                         for k in range(1, n))
        cols = ", ".join(x for x in (counts, avgs, meds) if x)
        sql = f"{sql_with} SELECT bd, {cols} FROM final GROUP BY bd"
    rows = ctx.execute(sql, f.scope.params.values, prepare=prepare)
    groups = []
    for row in rows:
        bd = row[0]
        c = list(row[1:1 + n])
        av = list(row[1 + n:1 + n + (n - 1)])
        md = list(row[1 + n + (n - 1):])
        groups.append((bd, c, av, md))
    groups.sort(key=lambda g: (g[0] == OTHER_SENTINEL, g[0] == NULL_SENTINEL, -g[1][-1], -g[1][0], str(g[0])))
    results = []
    for bd, c, av, md in groups:
        steps = []
        for i, node in enumerate(q.series):
            name = node.event if node.event is not None else "All events"
            step = {"action_id": node.event, "name": name, "custom_name": node.custom_name, "order": i,
                    "count": int(c[i] or 0), "type": "events",
                    "average_conversion_time": None if i == 0 or av[i - 1] is None else float(av[i - 1]),
                    "median_conversion_time": None if i == 0 or md[i - 1] is None else float(md[i - 1])}
            if has_bd:
                step["breakdown"] = step["breakdown_value"] = bd
            steps.append(step)
        results.append(steps)
    if not results:
        results = [[{"action_id": node.event, "name": node.event or "All events", "custom_name": node.custom_name,
                     "order": i, "count": 0, "type": "events", "average_conversion_time": None,
                     "median_conversion_time": None} for i, node in enumerate(q.series)]]
    if not has_bd:
        results = results[0]
    return {"results": results, "kind": "FunnelsQuery", "timezone": f.range.tz.key,
            "isUdf": False}


def _time_to_convert(ctx: QueryContext, q: FunnelsQuery, f: FunnelSQL) -> dict:
    n = f.n
    frm = q.funnelsFilter.funnelFromStep or 0
    to = q.funnelsFilter.funnelToStep if q.funnelsFilter.funnelToStep is not None else n - 1
    if not 0 <= frm < to <= n - 1:
        raise InvalidInput("funnelFromStep must be less than funnelToStep, within the steps.", attr="funnelToStep")
    d = ctx.dialect
    # the fast path's `best` holds every actor past step 1 (to >= 1), without the step-1-only rows
    source = (funnel_fast.ctes_sql(f), "best") if funnel_fast.applies(f) else (f.actors_sql(), "actors")
    sql = (f"{source[0]} SELECT {d.epoch(f't{to + 1}')} - {d.epoch(f't{frm + 1}')} FROM {source[1]} "
           f"WHERE reached >= {to}")
    times = [float(r[0]) for r in ctx.execute(sql, f.scope.params.values) if r[0] is not None]
    if not times:
        return {"results": {"bins": [], "average_conversion_time": None}, "kind": "FunnelsQuery"}
    bins = q.funnelsFilter.binCount or max(1, min(60, math.ceil(len(times) ** (1 / 3))))
    lo = math.floor(min(times))
    width = math.ceil((math.ceil(max(times)) - lo) / bins) or 60
    counts = [0] * (bins + 1)
    for t in times:
        counts[min(int((t - lo) // width), bins)] += 1
    return {"results": {"bins": [[lo + i * width, counts[i]] for i in range(bins + 1)],
                        "average_conversion_time": sum(times) / len(times)}, "kind": "FunnelsQuery"}


def _trends(ctx: QueryContext, q: FunnelsQuery, f: FunnelSQL) -> dict:
    """Conversion over time: per entry bucket, who entered and who converted within the window."""
    if f.order == "unordered":
        raise InvalidInput("Funnel trends are not available for unordered funnels.", attr="funnelVizType")
    n = f.n
    frm = q.funnelsFilter.funnelFromStep or 0
    to = q.funnelsFilter.funnelToStep if q.funnelsFilter.funnelToStep is not None else n - 1
    p = f.scope.params
    tz = p.add(f.range.tz.key, "tz")
    d = ctx.dialect
    bucket = d.trunc(q.interval, local_time(d, "t1", tz, f.range.tz.key), ctx.week_start_monday)
    sql = (f"{f.actors_sql()}, per AS (SELECT actor, bk, {bucket} AS bucket, max(reached) AS reached "
           f"FROM ranked WHERE NOT excluded GROUP BY actor, bk, bucket) "
           f"SELECT bucket, count(*) FILTER (WHERE reached >= {frm}), count(*) FILTER (WHERE reached >= {to}) "
           f"FROM per GROUP BY bucket")
    rows = {r[0]: (int(r[1]), int(r[2])) for r in ctx.execute(sql, p.values)}
    buckets = f.range.buckets()
    data, entered, converted = [], [], []
    for b in buckets:
        fr, tv = rows.get(b, (0, 0))
        entered.append(fr)
        converted.append(tv)
        data.append(round(tv / fr * 100, 2) if fr else 0)
    return {"results": [{"data": data, "days": [f.range.label(b) for b in buckets],
                         "labels": [f.range.pretty(b) for b in buckets], "count": len(buckets),
                         "reached_from_step_count": entered, "reached_to_step_count": converted}],
            "kind": "FunnelsQuery"}
