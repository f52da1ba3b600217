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

**Step 1's count from the actors files.** When step 1 is a bare event (no property filters, no
global or test-account filters, persons as actors), its distinct actors come from the actors
files of the part files that lie wholly inside the range (``storage/duckdb_parts.py``: the
distinct ``(project, event, person)`` of each file, ~6x fewer rows than the events), plus the
events of the other overlapping files and of the hot table, read as they are; the overrides
map the union. :func:`steps_plan` returns the statement and a ``prepare`` step that picks the
files in the query's own read-only transaction (the same snapshot as the statement). Then s1
is read by the join only (still materialized: with it, DuckDB builds the join's hash table on
the smaller side whichever step is frequent; measured both ways at 10M).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sightline.query.dialect import ClickHouseDialect
from sightline.query.filters import PERSON_ID, properties_sql

if TYPE_CHECKING:  # pragma: no cover
    from sightline.query.funnels import FunnelSQL

ENABLED = True  # tests switch the fast path off to compare it with the general builder
USE_ACTORS_FILES = True  # step 1's count from the actors files (tests and benchmarks compare)


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
        # s1 is materialized even when only the join reads it (step 1's count from the actors
        # files): DuckDB then builds the join's hash table on the smaller side either way
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
    # most actors have one attempt: only those with several are ranked (a window sort); actors
    # are never NULL (person ids are NOT NULL; group actors are filtered on IS NOT NULL)
    ctes.append("multi AS (SELECT actor FROM att GROUP BY actor HAVING count(*) > 1)")
    ctes.append(f"best AS (SELECT actor, reached, {ts_cols} FROM att WHERE actor NOT IN (SELECT actor FROM multi) "
                f"UNION ALL SELECT actor, reached, {ts_cols} FROM att WHERE actor IN (SELECT actor FROM multi) "
                f"QUALIFY row_number() OVER (PARTITION BY actor ORDER BY reached DESC, {reach_ts} ASC, t1 DESC, "
                "t2 ASC) = 1)")
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
    return _steps_text(f)


def _steps_text(f: FunnelSQL, count: str | None = None) -> str:
    """:func:`steps_sql`; ``count``: a scalar subquery counting step 1's actors (else: the
    distinct actors of s1)."""
    n = f.n
    d = f.scope.dialect
    counts = ", ".join(f"count(*) FILTER (WHERE reached >= {k})" for k in range(1, n))
    avgs = ", ".join(f"avg({d.epoch(f't{k + 1}')} - {d.epoch(f't{k}')}) FILTER (WHERE reached >= {k})"
                     for k in range(1, n))
    meds = ", ".join(f"{d.median(d.epoch(f't{k + 1}') + ' - ' + d.epoch(f't{k}'))} FILTER (WHERE reached >= {k})"
                     for k in range(1, n))
    first = count or f"(SELECT {d.count_distinct('actor')} FROM s1)"
    return ("WITH " + ", ".join(_ctes(f)) +
            f" SELECT NULL AS bd, {first}, {counts}, {avgs}, {meds} FROM best")


# -- step 1's count from the actors files --------------------------------------------------
_COUNT = "(SELECT -1 AS sl_fa_count)"  # where prepare puts step 1's count


def _index_applies(f: FunnelSQL) -> bool:
    """Step 1 is a bare event counted per person, with nothing that needs its rows' other columns."""
    q, s = f.q, f.scope
    storage = f.ctx.storage
    if getattr(storage, "parts_dir", None) is None or not hasattr(storage, "query"):
        return False
    if f.actor() != PERSON_ID or q.series[0].event is None:
        return False
    if properties_sql(q.series[0].properties, s) != "true" or properties_sql(q.properties, s) != "true":
        return False
    if q.filterTestAccounts:
        from sightline.query.filters import test_account_filters

        if properties_sql(test_account_filters(f.ctx.settings), s) != "true":
            return False
    return f.range.start is not None and f.range.end is not None


def steps_plan(f: FunnelSQL) -> tuple[str, Callable[[Any, str, dict], tuple[str, dict]] | None]:
    """:func:`steps_sql` and, when step 1's count can come from the actors files, the
    ``prepare`` step (see ``QueryContext.execute``) that switches to them in the query's
    transaction; without any file to read them from, the statement stays as it is."""
    sql = steps_sql(f)
    if not USE_ACTORS_FILES or not _index_applies(f):
        return sql, None
    from sightline.storage.duckdb_parts import actors_path, parts_in_range_sql

    indexed = _steps_text(f, _COUNT)  # (built now: its parameters join the query's)
    root = f.ctx.storage.parts_dir
    values = {"fa_project": f.ctx.project_id, "fa_event": f.q.series[0].event,
              "fa_start": f.range.start, "fa_end": f.range.end}

    def prepare(cur: Any, text: str, params: dict) -> tuple[str, dict]:
        files = cur.execute(parts_in_range_sql("$fa_project", "$fa_start", "$fa_end"),
                            {k: values[k] for k in ("fa_project", "fa_start", "fa_end")}).fetchall()
        covered, rest = [], []
        for name, _rows, inside in files:
            path = root / name
            if inside and actors_path(path).exists():
                covered.append(str(actors_path(path)))
            else:
                rest.append(str(path))
        if not covered:
            return text, params
        cond = ("e.project_id = $fa_project AND e.event = $fa_event AND e.timestamp >= $fa_start "
                "AND e.timestamp <= $fa_end")
        parts = [("SELECT person_id FROM read_parquet($fa_actors, hive_partitioning = false) "
                  "WHERE project_id = $fa_project AND event = $fa_event")]
        if rest:
            parts.append(f"SELECT e.person_id FROM read_parquet($fa_parts, hive_partitioning = false) e WHERE {cond}")
        parts.append(f"SELECT e.person_id FROM events_hot e WHERE {cond}")
        count = ("(SELECT count(DISTINCT coalesce(o.override_person_id, x.person_id)) FROM ("
                 + " UNION ALL ".join(parts) + ") x LEFT JOIN person_overrides o ON o.project_id = $fa_project "
                 "AND o.old_person_id = x.person_id)")
        return indexed.replace(_COUNT, count), {**params, **values, "fa_actors": covered, "fa_parts": rest}

    return sql, prepare
