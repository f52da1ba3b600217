"""Ordered funnels whose steps are distinct events, without ordering each actor's events.

The general builder (``funnels.FunnelSQL.actors_sql``) numbers the events of every actor that
may get past step 1 (a window sort over millions of rows when step 1 is ``$pageview``) and walks
the attempts with ASOF joins. When

* the funnel is ordered (not strict, not unordered), has at least two steps, no exclusions and
  no breakdown, and is not a funnel-trends query (those count every start's bucket),
* every step names an event and no two steps name the same event, so an event fills at most
  one step (its order among events of the same timestamp is its step, and the uuid tie-break
  never matters: events of one step at one timestamp are interchangeable),
* and the engine is DuckDB,

the attempt that decides each actor can be found with hash joins over the step events alone:

1. **Starts.** Among attempts whose next step-2 event is the same, the latest start wins (the
   chain after step 2 is the same, with more of the window left; the ranking "furthest step;
   first to get there; then latest start" prefers it on every tie). So the only useful starts
   are, for each step-2 event ``e2``, the latest step-1 event at or before it within the window:
   a hash join of the (rare) step-2 events to the step-1 events on the actor, ``max(t1)`` per
   ``e2``. A step-1 event at the same timestamp as ``e2`` comes first (steps order ties).
2. **Chain.** From ``(t1, t2)`` each further step is the first event of that step at or after the
   previous step's time and within the window of ``t1`` (a join on the actor and ``min``), over
   the small tables of later steps.
3. **Best attempt per actor**: most steps, then earliest time of the last step, then latest
   start, then earliest ``t2``. A row built from an ``e2`` that is not the first step-2 event after
   its start (another ``e2`` of the same start came earlier) is never better than that start's own
   row on any of these keys, and loses the ``t2`` tie-break, so it never wins.
4. Actors that only reach step 1 need no row of their own for the step counts: step 1 counts the
   distinct actors of step-1 events.

The conversion times come from the same winning attempt as in the general builder, so counts,
averages, medians, persons and time-to-convert histograms are identical (tests compare both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sightline.query.dialect import ClickHouseDialect

if TYPE_CHECKING:  # pragma: no cover
    from sightline.query.funnels import FunnelSQL

ENABLED = True  # tests switch the fast path off to compare it with the general builder


def applies(f: FunnelSQL) -> bool:
    q = f.q
    ff = q.funnelsFilter
    if not ENABLED or isinstance(f.scope.dialect, ClickHouseDialect):
        return False
    if f.order != "ordered" or f.n < 2 or ff.exclusions or not f.prune_starts:
        return False
    if q.breakdownFilter is not None and q.breakdownFilter.breakdown not in (None, ""):
        return False
    events = [node.event for node in q.series]
    return all(e is not None for e in events) and len(set(events)) == len(events)


def _ctes(f: FunnelSQL) -> list[str]:
    """s1..sn (actor, ts of each step's events), c2..cn (attempts) and ``best`` (one per actor)."""
    n, win = f.n, f.window
    d = f.scope.dialect
    ctes = []
    for k in range(1, n + 1):
        # s1 feeds both the count of step-1 actors and the join: materialized, read once
        ctes.append(f"s{k} AS {'MATERIALIZED ' if k == 1 else ''}({f.step_events_sql(k - 1)})")
    ctes.append(f"c2 AS (SELECT b.actor, max(a.ts) AS t1, b.ts AS t2 FROM s2 b JOIN s1 a ON a.actor = b.actor "
                f"AND a.ts <= b.ts AND {d.epoch('b.ts')} - {d.epoch('a.ts')} <= {win} GROUP BY b.actor, b.ts)")
    for k in range(3, n + 1):
        prev = ", ".join(f"c.t{j}" for j in range(1, k))
        ctes.append(f"c{k} AS (SELECT c.actor, {prev}, min(x.ts) AS t{k} FROM c{k - 1} c LEFT JOIN s{k} x "
                    f"ON x.actor = c.actor AND x.ts >= c.t{k - 1} AND {d.epoch('x.ts')} - {d.epoch('c.t1')} <= {win} "
                    f"GROUP BY c.actor, {prev})")
    reached = " + ".join(["1"] + [f"(t{k} IS NOT NULL)::INT" for k in range(3, n + 1)])
    reach_ts = "CASE reached " + " ".join(f"WHEN {k - 1} THEN t{k}" for k in range(2, n + 1)) + " END"
    ts_cols = ", ".join(f"t{k}" for k in range(1, n + 1))
    ctes.append(f"att AS (SELECT actor, {ts_cols}, {reached} AS reached FROM c{n})")
    ctes.append(f"best AS (SELECT actor, reached, {ts_cols} FROM att QUALIFY row_number() OVER "
                f"(PARTITION BY actor ORDER BY reached DESC, {reach_ts} ASC, t1 DESC, t2 ASC) = 1)")
    return ctes


def ctes_sql(f: FunnelSQL) -> str:
    """``WITH`` up to ``best``: one row per actor that got past step 1 (reached >= 1)."""
    return "WITH " + ", ".join(_ctes(f))


def actors_sql(f: FunnelSQL) -> str:
    """The ``actors`` relation of the general builder (one row per actor, ``bv_key`` NULL)."""
    n = f.n
    d = f.scope.dialect
    ts_cols = ", ".join(f"t{k}" for k in range(1, n + 1))
    nulls = "".join(f", {d.null_timestamp()} AS t{k}" for k in range(2, n + 1))
    ctes = _ctes(f)
    # actors that reach step 1 only: t1 is their last step-1 event (as the general builder's `rest`)
    ctes.append(f"actors AS (SELECT actor, NULL AS bv_key, reached, {ts_cols} FROM best "
                f"UNION ALL SELECT actor, NULL AS bv_key, 0 AS reached, max(ts) AS t1{nulls} FROM s1 "
                f"WHERE actor NOT IN (SELECT actor FROM best) GROUP BY actor)")
    return "WITH " + ", ".join(ctes)


def steps_sql(f: FunnelSQL) -> str:
    """One row like ``funnels._steps`` reads: NULL breakdown, counts, average and median times."""
    n = f.n
    d = f.scope.dialect
    counts = ", ".join(f"count(*) FILTER (WHERE reached >= {k})" for k in range(1, n))
    avgs = ", ".join(f"avg({d.epoch(f't{k + 1}')} - {d.epoch(f't{k}')}) FILTER (WHERE reached >= {k})"
                     for k in range(1, n))
    meds = ", ".join(f"{d.median(d.epoch(f't{k + 1}') + ' - ' + d.epoch(f't{k}'))} FILTER (WHERE reached >= {k})"
                     for k in range(1, n))
    return ("WITH " + ", ".join(_ctes(f)) +
            f" SELECT NULL AS bd, (SELECT {d.count_distinct('actor')} FROM s1), {counts}, {avgs}, {meds} FROM best")
