"""User paths (spec analytics §6): the most common transitions between pages or events.

Events of each person are split into path sessions at gaps of 30 minutes or more, consecutive
duplicates collapse, and each transition ``i → i+1`` between positions counts once per path
session. Everything but the start-and-end slicing runs in SQL.

On DuckDB, the common shape (no start or end point, ``$pageview`` paths) goes
through :mod:`sightline.query.paths_fast` instead: no sort, the store's per-person runs merged
(about 5x faster; identical edges, counts and average times). It returns ``None`` when it does
not apply, and the SQL below runs; ``FAST_PATHS = False`` turns it off (tests compare both).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from sightline.errors import InvalidInput
from sightline.query.context import QueryContext
from sightline.query.dates import resolve
from sightline.query.filters import PERSON_ID, properties_sql, test_account_filters
from sightline.query.model import PathsQuery

SESSION_GAP_SECONDS = 30 * 60
FAST_PATHS = True  # DuckDB: the sort-free version (paths_fast) when it applies; tests switch it off to compare
# Used when the project has not set its own path-cleaning rules: numeric and UUID-like URL parts.
DEFAULT_PATH_CLEANING = [
    {"regex": r"/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(/|$|\?)", "alias": r"/:id\1"},
    {"regex": r"/\d+(/|$|\?)", "alias": r"/:id\1"},
]


def _rules(ctx: QueryContext, q: PathsQuery) -> list[dict]:
    rules = []
    if q.pathsFilter.pathReplacements:
        rules += ctx.settings.get("path_cleaning_filters", DEFAULT_PATH_CLEANING)
    rules += q.pathsFilter.localPathCleaningFilters
    for rule in rules:
        try:
            re.compile(str(rule.get("regex", "")))
        except re.error as exc:
            raise InvalidInput(f"Invalid path cleaning regex {rule.get('regex')!r}: {exc}.",
                               attr="localPathCleaningFilters") from None
    return rules


def _sql_alias(alias: str) -> str:
    # Python-style \1 back-references are what RE2 (DuckDB) understands too
    return alias


def run(ctx: QueryContext, q: PathsQuery) -> dict:
    pf = q.pathsFilter
    rng = resolve(q.dateRange.date_from, q.dateRange.date_to, interval="day", tz=ctx.timezone, now=ctx.now,
                  explicit=q.dateRange.explicitDate, week_start_monday=ctx.week_start_monday)
    scope = ctx.scope()
    d, p = scope.dialect, scope.params
    types = set(pf.includeEventTypes or ["$pageview"])
    label_cases, event_conds = [], []
    if "$pageview" in types:
        url = d.event_property(p, "$current_url")
        trimmed = d.regexp_replace(url, d.string("(.)/$"), d.string("\\1"))
        label_cases.append(f"WHEN e.event = '$pageview' THEN {trimmed}")
        event_conds.append("e.event = '$pageview'")
    if "$screen" in types:
        label_cases.append(f"WHEN e.event = '$screen' THEN {d.event_property(p, '$screen_name')}")
        event_conds.append("e.event = '$screen'")
    if "custom_event" in types:
        label_cases.append(f"WHEN NOT {d.starts_with('e.event', d.string('$'))} THEN e.event")
        event_conds.append(f"NOT {d.starts_with('e.event', d.string('$'))}")
    if not label_cases:
        raise InvalidInput("Paths need at least one of $pageview, $screen, custom_event in includeEventTypes.",
                           attr="includeEventTypes")
    label = "CASE " + " ".join(label_cases) + " END"
    for rule in _rules(ctx, q):
        label = d.regexp_replace(label, p.add(str(rule['regex']), 're'),
                                 p.add(_sql_alias(str(rule.get('alias', ''))), 'alias'), all_matches=True)
    excluded = getattr(q.pathsFilter, "excludeEvents", None) or []
    events_cond = "(" + " OR ".join(event_conds) + ")"
    where = [f"e.project_id = {scope.project}", f"e.timestamp >= {p.add(rng.start, 'start')}",
             f"e.timestamp <= {p.add(rng.end, 'end')}", events_cond,
             properties_sql(q.properties, scope)]
    if q.filterTestAccounts:
        where.append(properties_sql(test_account_filters(ctx.settings), scope))
    limit = pf.stepLimit
    where_sql = " AND ".join(w for w in where if w != "true")
    drop = d.has(p.add([str(x) for x in excluded], "ex"), "label") if excluded else None
    joins = scope.joins()
    ev = [
        f"ev AS (SELECT {PERSON_ID} AS actor, e.timestamp AS ts, e.uuid AS uuid, {label} AS label "
        f"FROM events e{joins} WHERE {where_sql})",
        "ev2 AS (SELECT * FROM ev WHERE label IS NOT NULL" + (f" AND NOT {drop})" if drop else ")"),
    ]
    if not pf.startPoint and not pf.endPoint:
        edges = None
        # the sort-free version (paths_fast): $pageview paths (parts are sorted by event first, so
        # several event types interleave in time and would all need the general SQL anyway)
        if FAST_PATHS and d.name == "duckdb" and types == {"$pageview"} and \
                d.event_property(p, "$current_url") == "e.mat_current_url":
            from sightline.query import paths_fast

            edges = paths_fast.edges(ctx, paths_fast.FastInput(
                joins=joins, where=where_sql, label=label, drop=drop, actor=PERSON_ID, project=scope.project,
                events=events_cond, start=rng.start, end=rng.end, params=p.values,
                limit=limit))
        if edges is None:
            edges = _edges_from_starts(ctx, ev, limit, p)
        return _result(edges, q)
    ctes = ev + [
        f"g AS (SELECT *, CASE WHEN lag(ts) OVER w IS NULL OR {d.epoch('ts')} - {d.epoch('lag(ts) OVER w')} >= "
        f"{SESSION_GAP_SECONDS} THEN 1 ELSE 0 END AS brk FROM ev2 WINDOW w AS (PARTITION BY actor ORDER BY ts, uuid))",
        "s AS (SELECT *, sum(brk) OVER (PARTITION BY actor ORDER BY ts, uuid ROWS UNBOUNDED PRECEDING) AS sid FROM g)",
        "c AS (SELECT * FROM (SELECT *, lead(label) OVER (PARTITION BY actor, sid ORDER BY ts, uuid) AS nxt FROM s) "
        f"WHERE {d.distinct('nxt', 'label')})",
        "n AS (SELECT actor, sid, ts, label, row_number() OVER (PARTITION BY actor, sid ORDER BY ts, uuid) AS pos FROM c)",
    ]
    if pf.startPoint and pf.endPoint:
        return _both(ctx, q, ctes, p)
    if pf.startPoint:
        ctes.append(f"st AS (SELECT actor, sid, min(pos) AS p0 FROM n WHERE label = {p.add(pf.startPoint, 'sp')} "
                    f"GROUP BY ALL)")
        ctes.append(f"kept AS (SELECT n.actor, n.sid, n.ts, n.label, n.pos - st.p0 + 1 AS k FROM n JOIN st "
                    f"USING (actor, sid) WHERE n.pos >= st.p0 AND n.pos < st.p0 + {limit})")
    elif pf.endPoint:
        ctes.append(f"en AS (SELECT actor, sid, min(pos) AS p1 FROM n WHERE label = {p.add(pf.endPoint, 'ep')} "
                    f"GROUP BY ALL)")
        ctes.append(f"kept AS (SELECT n.actor, n.sid, n.ts, n.label, n.pos - greatest(en.p1 - {limit}, 0) AS k "
                    f"FROM n JOIN en USING (actor, sid) WHERE n.pos <= en.p1 AND n.pos > en.p1 - {limit})")
    sql = ("WITH " + ", ".join(ctes) +
           " SELECT a.k || '_' || a.label, b.k || '_' || b.label, count(*), "
           f"avg({d.epoch_ms('b.ts')} - {d.epoch_ms('a.ts')}) FROM kept a JOIN kept b "
           "ON a.actor = b.actor AND a.sid = b.sid AND b.k = a.k + 1 GROUP BY 1, 2")
    edges = [(src, dst, int(v), float(t)) for src, dst, v, t in ctx.execute(sql, p.values)]
    return _result(edges, q)


def _edges_from_starts(ctx: QueryContext, ev: list[str], limit: int, p) -> list[tuple]:
    """Edges between the first ``limit`` items of every path session, in two ordering passes.

    1. Over the actor's events: an event is followed within the session gap (``sn``) and, if
       the next event also has its label, it is a duplicate that collapses into that one.
    2. Over the events left: a session starts where the previous one was not followed within
       the gap; from each start, ``lead`` reads the next ``limit - 1`` items (the next kept
       event is in the same session exactly when the current one is followed within the gap).
    Items are ordered by (timestamp, uuid), so events sharing a timestamp have one order."""
    d = ctx.dialect
    if d.name == "duckdb":
        edges = _edges_hashed(ctx, ev, limit, p)
        if edges is not None:
            return edges
    gap = SESSION_GAP_SECONDS
    # (ClickHouse's lead gives the type's default, not NULL, past the last row: 1970 < ts)
    within = f"coalesce(nts >= ts AND {d.epoch('nts')} - {d.epoch('ts')} < {gap}, false)"
    win = "WINDOW w AS (PARTITION BY actor ORDER BY ts, uuid)"
    leads = "".join(f", lead(label, {j}) OVER w AS l{j}, lead(ts, {j}) OVER w AS t{j}"
                    + (f", lead(sn, {j}) OVER w AS n{j}" if j < limit - 1 else "") for j in range(1, limit))
    ctes = ev + [
        f"p1 AS (SELECT actor, ts, uuid, label, lead(ts) OVER w AS nts, lead(label) OVER w AS nlabel FROM ev2 {win})",
        f"k1 AS (SELECT actor, ts, uuid, label, {within} AS sn FROM p1 WHERE NOT ({within} AND nlabel = label))",
        f"p2 AS (SELECT label AS l0, ts AS t0, sn AS n0, lag(sn) OVER w AS psn{leads} FROM k1 {win})",
        "heads AS (SELECT * FROM p2 WHERE psn IS NULL OR NOT psn)",
    ]
    steps = []
    for k in range(1, limit):  # the edge from position k to k + 1
        cond = " AND ".join(f"n{j}" for j in range(k))
        steps.append(f"SELECT {d.string(f'{k}_')} || l{k - 1} AS src, {d.string(f'{k + 1}_')} || l{k} AS dst, "
                     f"{d.epoch_ms(f't{k}')} - {d.epoch_ms(f't{k - 1}')} AS dt FROM heads WHERE {cond}")
    sql = ("WITH " + ", ".join(ctes) + " SELECT src, dst, count(*), avg(dt) FROM (" + " UNION ALL ".join(steps)
           + ") GROUP BY src, dst")
    return [(src, dst, int(v), float(t)) for src, dst, v, t in ctx.execute(sql, p.values)]


def _both(ctx: QueryContext, q: PathsQuery, ctes: list[str], p) -> dict:
    pf = q.pathsFilter
    limit = pf.stepLimit
    d = ctx.dialect
    sql = ("WITH " + ", ".join(ctes) + f" SELECT {d.list_agg('label', 'pos')}, {d.list_agg(d.epoch_ms('ts'), 'pos')} "
           f"FROM n GROUP BY actor, sid HAVING {d.has(d.list_agg('label', 'pos'), p.add(pf.startPoint, 'sp'))}")
    counts: Counter = Counter()
    times: dict = defaultdict(list)
    for labels, stamps in ctx.execute(sql, p.values):
        start = labels.index(pf.startPoint)
        try:
            end = labels.index(pf.endPoint, start + 1)
        except ValueError:
            continue
        items = list(zip(labels[start:end + 1], stamps[start:end + 1]))
        if len(items) > limit:
            half = limit // 2
            items = items[:half] + [("...", None)] + items[-half:]
        for i in range(len(items) - 1):
            key = (f"{i + 1}_{items[i][0]}", f"{i + 2}_{items[i + 1][0]}")
            counts[key] += 1
            if items[i][1] is not None and items[i + 1][1] is not None:
                times[key].append(items[i + 1][1] - items[i][1])
    edges = [(s, t, v, (sum(times[(s, t)]) / len(times[(s, t)])) if times[(s, t)] else 0.0)
             for (s, t), v in counts.items()]
    return _result(edges, q)


def _edges_hashed(ctx: QueryContext, ev: list[str], limit: int, p) -> list[tuple] | None:
    """:func:`_edges_from_starts` over 64-bit hashes of the labels (DuckDB): the two ordering
    passes move integers instead of URLs, about 40 % less work. A second statement maps the
    hashes of the result back to their labels and looks for two labels sharing a hash; if
    there is one (never seen in practice), ``None``: the caller runs the text version."""
    gap = SESSION_GAP_SECONDS
    within = f"coalesce(nts >= ts AND epoch(nts) - epoch(ts) < {gap}, false)"
    win = "WINDOW w AS (PARTITION BY actor ORDER BY ts, uuid)"
    leads = "".join(f", lead(label, {j}) OVER w AS l{j}, lead(ts, {j}) OVER w AS t{j}"
                    + (f", lead(sn, {j}) OVER w AS n{j}" if j < limit - 1 else "") for j in range(1, limit))
    ctes = ev + [
        "evh AS (SELECT actor, ts, uuid, hash(label) AS label FROM ev2)",
        f"p1 AS (SELECT actor, ts, uuid, label, lead(ts) OVER w AS nts, lead(label) OVER w AS nlabel FROM evh {win})",
        f"k1 AS (SELECT actor, ts, uuid, label, {within} AS sn FROM p1 WHERE NOT ({within} AND nlabel = label))",
        f"p2 AS (SELECT label AS l0, ts AS t0, sn AS n0, lag(sn) OVER w AS psn{leads} FROM k1 {win})",
        "heads AS (SELECT * FROM p2 WHERE psn IS NULL OR NOT psn)",
    ]
    steps = []
    for k in range(1, limit):
        cond = " AND ".join(f"n{j}" for j in range(k))
        steps.append(f"SELECT {k} AS k, l{k - 1} AS a, l{k} AS b, (epoch_us(t{k}) // 1000) - (epoch_us(t{k - 1}) // 1000) AS dt "
                     f"FROM heads WHERE {cond}")
    sql = ("WITH " + ", ".join(ctes) + " SELECT k, a, b, count(*), avg(dt) FROM (" + " UNION ALL ".join(steps)
           + ") GROUP BY k, a, b")
    rows = ctx.execute(sql, p.values)
    needed = sorted({r[1] for r in rows} | {r[2] for r in rows})
    names = {}
    if needed:
        sql = ("WITH " + ", ".join(ev) + ", dl AS (SELECT DISTINCT hash(label) AS h, label FROM ev2), "
               "m AS (SELECT h, count(*) AS n, min(label) AS label FROM dl GROUP BY h) "
               f"SELECT h, n, label FROM m WHERE n > 1 OR list_contains({p.add(needed, 'hashes')}, h)")
        for h, n, label in ctx.execute(sql, p.values):
            if n > 1:
                return None
            names[h] = label
    return [(f"{k}_{names[a]}", f"{k + 1}_{names[b]}", int(v), float(t)) for k, a, b, v, t in rows]


def _result(edges: list[tuple], q: PathsQuery) -> dict:
    pf = q.pathsFilter
    lo = getattr(pf, "minEdgeWeight", None)
    hi = getattr(pf, "maxEdgeWeight", None)
    edges = [e for e in edges if (lo is None or e[2] >= lo) and (hi is None or e[2] <= hi)]
    edges.sort(key=lambda e: (-e[2], e[0], e[1]))
    edges = edges[:pf.edgeLimit]
    # keep only what is reachable from a first-step node
    reach = {e[0] for e in edges if e[0].startswith("1_")}
    kept, changed = [], True
    remaining = list(edges)
    while changed:
        changed = False
        for e in list(remaining):
            if e[0] in reach:
                kept.append(e)
                reach.add(e[1])
                remaining.remove(e)
                changed = True
    kept.sort(key=lambda e: (-e[2], e[0], e[1]))
    return {"results": [{"source": s, "target": t, "value": v, "average_conversion_time": avg}
                        for s, t, v, avg in kept], "kind": "PathsQuery"}
