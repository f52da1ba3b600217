"""Cohort membership as SQL, for filters and breakdowns in every query kind.

A cohort is static (a list of distinct ids) or dynamic: an AND/OR tree (the same tree the flag
matcher reads, :func:`sightline.flags.cohorts.cohort_property_group`) of person-property filters,
nested cohorts and behavioural conditions over events:

``{"type": "behavioral", "key": "<event>", "value": "performed_event" | "performed_event_multiple"
| "performed_event_first_time" | "stopped_performing_event" | "restarted_performing_event",
"time_value": 30, "time_interval": "day"|"week"|"month"|"hour", "operator": "gte"|"lte"|"exact",
"operator_value": 3, "seq_time_value"/"seq_time_interval" (for stopped/restarted)}``

Windows are measured back from the query's "now" (``[now - N interval, now]``). The result is a
condition on the current person id of an events row (``PERSON_ID``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sightline.errors import InvalidInput
from sightline.flags.cohorts import cohort_property_group
from sightline.query.filters import PERSON_ID, Scope, filter_sql
from sightline.query.model import PropertyFilter

MAX_DEPTH = 10
EVENTS_PERSON = ("SELECT coalesce(o.override_person_id, e.person_id) AS pid, e.event, e.timestamp FROM events e "
                 "LEFT JOIN person_overrides o ON o.project_id = e.project_id AND o.old_person_id = e.person_id "
                 "WHERE e.project_id = {project}")


def _window_start(now: datetime, value: Any, interval: Any) -> datetime:
    from sightline.flags.properties import relative_date

    try:
        n = int(value if value is not None else 30)
    except (TypeError, ValueError):
        raise InvalidInput(f"Cohort time_value must be a number, not {value!r}.", attr="time_value") from None
    unit = {"hour": "h", "day": "d", "week": "w", "month": "m", "year": "y"}.get((interval or "day").rstrip("s"))
    start = relative_date(f"-{n}{unit}", now) if unit else None
    if start is None:
        raise InvalidInput(f"Unknown cohort time window {value!r} {interval!r}.", attr="time_interval")
    return start


def _behavioral(node: dict, scope: Scope, now: datetime) -> str:
    p = scope.params
    kind = node.get("value") or "performed_event"
    event = node.get("key")
    if not isinstance(event, str) or not event:
        raise InvalidInput("A behavioural cohort condition needs `key`, the event name.", attr="key")
    ev = p.add(event, "event")
    base = EVENTS_PERSON.format(project=scope.project) + f" AND e.event = {ev}"
    since = p.add(_window_start(now, node.get("time_value"), node.get("time_interval")), "since")
    until = p.add(now, "now")
    if kind == "performed_event":
        sub = f"SELECT pid FROM ({base}) WHERE timestamp >= {since} AND timestamp <= {until}"
    elif kind == "performed_event_multiple":
        op = {"gte": ">=", "lte": "<=", "exact": "=", "gt": ">", "lt": "<"}.get(node.get("operator") or "gte")
        if op is None:
            raise InvalidInput("operator must be gte, lte, exact, gt or lt.", attr="operator")
        try:
            count = int(node.get("operator_value", 1))
        except (TypeError, ValueError):
            raise InvalidInput("operator_value must be a number.", attr="operator_value") from None
        sub = (f"SELECT pid FROM ({base}) WHERE timestamp >= {since} AND timestamp <= {until} "
               f"GROUP BY pid HAVING count(*) {op} {p.add(count, 'n')}")
        if op in ("<=", "<") or (op == "=" and count == 0):
            # "at most N times" includes people who never did it: test the complement instead
            sub = (f"SELECT pid FROM ({base}) WHERE timestamp >= {since} AND timestamp <= {until} "
                   f"GROUP BY pid HAVING NOT (count(*) {op} {p.add(count, 'n')})")
            return f"({PERSON_ID} NOT IN ({sub}))"
    elif kind == "performed_event_first_time":
        sub = f"SELECT pid FROM ({base}) GROUP BY pid HAVING min(timestamp) >= {since} AND min(timestamp) <= {until}"
    elif kind in ("stopped_performing_event", "restarted_performing_event"):
        # stopped: did it in the earlier window [seq, since) but not in [since, now];
        # restarted: did it in [since, now], not in the earlier window, but at some time before that
        earlier = p.add(_window_start(now, node.get("seq_time_value") or (int(node.get("time_value") or 30) * 2),
                                      node.get("seq_time_interval") or node.get("time_interval")), "seq")
        recent = f"SELECT pid FROM ({base}) WHERE timestamp >= {since} AND timestamp <= {until}"
        before = f"SELECT pid FROM ({base}) WHERE timestamp >= {earlier} AND timestamp < {since}"
        if kind == "stopped_performing_event":
            sub = f"{before} EXCEPT {recent}"
        else:
            older = f"SELECT pid FROM ({base}) WHERE timestamp < {earlier}"
            sub = f"({recent} EXCEPT {before}) INTERSECT {older}"
    else:
        raise InvalidInput(f"Unsupported behavioural cohort condition {kind!r}.", attr="value")
    return f"({PERSON_ID} IN ({sub}))"


def _group_sql(group: dict, scope: Scope, cohorts: dict[int, dict], now: datetime, seen: tuple[int, ...]) -> str:
    values = group.get("values") or []
    if not values:
        return "true"
    parts = []
    for node in values:
        if not isinstance(node, dict):
            raise InvalidInput("Cohort conditions must be objects.", attr="filters")
        kind = node.get("type")
        if ("values" in node or kind in ("AND", "OR")) and kind != "cohort":
            sql = _group_sql(node, scope, cohorts, now, seen)
        elif kind == "cohort":
            sql = cohort_sql(node.get("value"), scope, cohorts, now, seen)
            if (node.get("operator") or "in") == "not_in":
                sql = f"(NOT {sql})"
        elif kind == "behavioral":
            sql = _behavioral(node, scope, now)
        else:
            try:
                f = PropertyFilter.model_validate({**node, "type": "person"})
            except ValidationError as exc:
                err = exc.errors()[0]
                raise InvalidInput(f"Invalid cohort condition {node!r}: {'.'.join(map(str, err['loc']))}: "
                                   f"{err['msg']}.", attr="filters") from None
            sql = filter_sql(f, scope)
        if node.get("negation"):
            sql = f"(NOT {sql})"
        parts.append(sql)
    joiner = " OR " if group.get("type") == "OR" else " AND "
    return "(" + joiner.join(parts) + ")"


def cohort_sql(cohort_id: Any, scope: Scope, cohorts: dict[int, dict], now: datetime,
               seen: tuple[int, ...] = ()) -> str:
    """A condition that is true for events of persons in the cohort."""
    try:
        cid = int(cohort_id)
    except (TypeError, ValueError):
        raise InvalidInput(f"Cohort id must be a number, not {cohort_id!r}.", attr="value") from None
    cohort = cohorts.get(cid)
    if cohort is None or cohort.get("deleted"):
        raise InvalidInput(f"Cohort {cid} does not exist.", attr="value", code="not_found")
    if cid in seen or len(seen) > MAX_DEPTH:
        raise InvalidInput(f"Cohort {cid} refers to itself.", attr="value")
    if cohort.get("is_static"):
        members = scope.params.add(sorted(cohort.get("members") or []), "members")
        return (f"({PERSON_ID} IN (SELECT person_id FROM person_distinct_ids WHERE project_id = {scope.project} "
                f"AND {scope.dialect.has(members, 'distinct_id')}))")
    return _group_sql(cohort_property_group(cohort.get("filters")), scope, cohorts, now, seen + (cid,))


# -- management: the one place the API and the CLI go through --------------------------------
def validate_filters(filters: Any, known: dict | None = None) -> dict:
    """Check a dynamic cohort's tree by compiling it once (raises InvalidInput with the reason)."""
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise InvalidInput("`filters` must be an object like {\"properties\": {\"type\": \"AND\", \"values\": [...]}}.",
                           attr="filters")
    from sightline.query.dialect import DUCKDB

    scope = Scope(0, DUCKDB, now=datetime.now().astimezone())
    _group_sql(cohort_property_group(filters), scope, known or {}, scope.now, ())
    return filters


def cohort_json(row: dict, count: int | None = None) -> dict:
    return {"id": row["id"], "name": row["name"], "filters": row["filters"], "is_static": row["is_static"],
            "deleted": row["deleted"], "created_at": row["created_at"], "updated_at": row["updated_at"],
            "count": count}


def parse_csv_members(text: str) -> list[str]:
    """distinct ids from a CSV: the first column, header row skipped (PostHog's upload format)."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    return [r[0].strip() for r in rows[1:] if r and r[0].strip()]


def create(core, project_id: int, payload: dict) -> dict:
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("A cohort needs a `name`.", attr="name")
    is_static = bool(payload.get("is_static"))
    members = payload.get("distinct_ids") or payload.get("members") or []
    if isinstance(payload.get("csv"), str):
        members = list(members) + parse_csv_members(payload["csv"])
    if not isinstance(members, list) or not all(isinstance(m, (str, int)) for m in members):
        raise InvalidInput("`distinct_ids` must be a list of distinct ids.", attr="distinct_ids")
    filters = None if is_static else validate_filters(payload.get("filters") or {}, _known(core, project_id))
    cid = core.meta.create_cohort(project_id, name.strip(), filters, is_static=is_static,
                                  members=[str(m) for m in members])
    return get(core, project_id, cid)


def _known(core, project_id: int) -> dict:
    from sightline.query.runner import load_cohorts

    return load_cohorts(core.meta, project_id)


def _row(core, project_id: int, cohort_id: int) -> dict:
    for row in core.meta.cohort_rows(project_id):
        if row["id"] == cohort_id and not row["deleted"]:
            return row
    from sightline.errors import NotFound

    raise NotFound(f"Cohort {cohort_id} does not exist.")


def get(core, project_id: int, cohort_id: int) -> dict:
    return cohort_json(_row(core, project_id, cohort_id), count=len(members(core, project_id, cohort_id, 1_000_000)))


def update(core, project_id: int, cohort_id: int, payload: dict) -> dict:
    row = _row(core, project_id, cohort_id)
    filters = None
    if "filters" in payload:
        if row["is_static"]:
            raise InvalidInput("A static cohort has members, not filters.", attr="filters")
        known = {k: v for k, v in _known(core, project_id).items() if k != cohort_id}
        filters = validate_filters(payload["filters"], known)
    add = [str(m) for m in payload.get("add_distinct_ids") or []]
    if isinstance(payload.get("csv"), str):
        add += parse_csv_members(payload["csv"])
    if add and not row["is_static"]:
        raise InvalidInput("Only static cohorts take members.", attr="add_distinct_ids")
    core.meta.update_cohort(cohort_id, name=payload.get("name"), filters=filters, deleted=payload.get("deleted"),
                            add_members=add, remove_members=[str(m) for m in payload.get("remove_distinct_ids") or []])
    return get(core, project_id, cohort_id) if not payload.get("deleted") else cohort_json(row)


def delete(core, project_id: int, cohort_id: int) -> None:
    _row(core, project_id, cohort_id)
    core.meta.update_cohort(cohort_id, deleted=True)


def members(core, project_id: int, cohort_id: int, limit: int = 100, offset: int = 0) -> list[dict]:
    """The persons in a cohort now (distinct ids and properties)."""
    import orjson

    from sightline.query.context import QueryContext
    from sightline.query.runner import load_cohorts

    project = core.resolve_project(project_id)
    core.sync()
    ctx = QueryContext(core.storage, project.id, timezone=project.timezone, settings=project.settings,
                       cohorts=load_cohorts(core.meta, project.id))
    scope = ctx.scope()
    cond = cohort_sql(cohort_id, scope, ctx.cohorts, ctx.now)
    p = scope.params
    ids, ids_join = ctx.dialect.distinct_ids_of("pr.id", among="SELECT pid FROM sel")
    sql = (f"WITH sel AS (SELECT DISTINCT e.person_id AS pid FROM (SELECT id AS person_id, project_id FROM persons "
           f"WHERE project_id = {scope.project}) e{scope.joins()} WHERE {cond}) "
           f"SELECT {ctx.dialect.to_text('pr.id')}, pr.properties, {ids} "
           f"FROM sel JOIN persons pr ON pr.id = sel.pid{ids_join} ORDER BY pr.created_at, 1 "
           f"LIMIT {p.add(limit, 'limit')} OFFSET {p.add(offset, 'offset')}")
    return [{"id": r[0], "properties": orjson.loads(r[1]) if r[1] else {}, "distinct_ids": list(r[2] or [])}
            for r in ctx.execute(sql, p.values)]
