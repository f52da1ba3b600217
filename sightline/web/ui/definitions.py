"""What the data contains, for autocomplete: event names, property names, top property values.

``GET /api/projects/<id>/event_definitions/``, ``/property_definitions/`` and ``/property_values/``
(secret key or session). Answers come from recent data (a sample of the newest rows for property
names and values) and are cached for a short while per project and arguments.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sightline.errors import InvalidInput, SightlineError
from sightline.query.dialect import Params, dialect_for
from sightline.web.http import error_response, json_response, require_api_key

CACHE_SECONDS = 30.0
SAMPLE_ROWS = 20_000
VALUE_SAMPLE_ROWS = 50_000
MAX_RESULTS = 1000

_cache: dict[tuple, tuple[float, Any]] = {}
_cache_lock = threading.Lock()


def _cached(key: tuple, compute: Callable[[], Any], core=None) -> Any:
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    if core is not None:
        core.sync()  # a miss sees every acknowledged event
    value = compute()
    with _cache_lock:
        if len(_cache) > 2000:
            _cache.clear()
        _cache[key] = (now, value)
    return value


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def event_names(storage, project_id: int) -> list[dict]:
    """Every event name of the project with its count and when it was last seen, most frequent first."""
    rows = storage.execute(
        "SELECT event, count(*) AS n, max(timestamp) AS last_seen FROM events WHERE project_id = $project "
        f"GROUP BY event ORDER BY n DESC, event LIMIT {MAX_RESULTS}", {"project": project_id}).rows
    return [{"id": name, "name": name, "volume": n, "last_seen_at": _iso(last)} for name, n, last in rows]


_JSON_TYPES = {"BIGINT": "Numeric", "UBIGINT": "Numeric", "DOUBLE": "Numeric", "VARCHAR": "String",
               "BOOLEAN": "Boolean", "ARRAY": "Array", "OBJECT": "Object", "NULL": None,
               # ClickHouse's JSONType names
               "INT64": "Numeric", "UINT64": "Numeric", "STRING": "String", "BOOL": "Boolean"}


def _keys_sql(dialect_name: str) -> str:
    """Property names and their most common JSON type over ``sample`` (one ``properties`` column)."""
    if dialect_name == "clickhouse":
        return ("SELECT k, count() AS n, toString(topK(1)(JSONType(props, k))[1]) AS t "
                "FROM (SELECT ifNull(properties, '{}') AS props, arrayJoin(JSONExtractKeys(props)) AS k FROM sample) "
                f"GROUP BY k ORDER BY n DESC, k LIMIT {MAX_RESULTS}")
    return ("SELECT k, count(*) AS n, "
            "mode(json_type(properties, '/' || replace(replace(k, '~', '~0'), '/', '~1'))) AS t "
            "FROM (SELECT properties, unnest(json_keys(properties)) AS k FROM sample) "
            f"GROUP BY k ORDER BY n DESC, k LIMIT {MAX_RESULTS}")


def property_names(storage, project_id: int, kind: str, events: list[str]) -> list[dict]:
    """Property names seen in the newest rows (events of ``events`` if given, or persons), with
    how often and their most common JSON type."""
    dialect = dialect_for(storage)
    p = Params()
    proj = p.add(project_id, "project")
    if kind == "person":
        sample = f"SELECT properties FROM persons WHERE project_id = {proj} ORDER BY created_at DESC LIMIT {SAMPLE_ROWS}"
    else:
        where = f"project_id = {proj}"
        if events:
            where += " AND " + dialect.has(p.add(events, "events"), "event")
        sample = f"SELECT properties FROM events WHERE {where} ORDER BY timestamp DESC LIMIT {SAMPLE_ROWS}"
    rows = storage.execute(f"WITH sample AS ({sample}) {_keys_sql(dialect.name)}", p.values).rows
    out = []
    for name, n, t in rows:
        ptype = _JSON_TYPES.get(str(t).upper()) if t else None
        out.append({"id": name, "name": name, "count": n, "property_type": ptype,
                    "is_numerical": ptype == "Numeric", "type": kind})
    return out


def property_values_of(storage, project_id: int, kind: str, key: str, event: str | None,
                    search: str | None, limit: int) -> list[dict]:
    """The most frequent values of one property in the newest rows, optionally containing ``search``."""
    dialect = dialect_for(storage)
    p = Params()
    proj = p.add(project_id, "project")
    if kind == "person":
        expr = dialect.json_property(p, "x.properties", key)
        inner = (f"SELECT {expr} AS v FROM persons x WHERE x.project_id = {proj} "
                 f"ORDER BY x.created_at DESC LIMIT {VALUE_SAMPLE_ROWS}")
    else:
        expr = dialect.event_property(p, key, alias="x")
        where = f"x.project_id = {proj}"
        if event:
            where += f" AND x.event = {p.add(event, 'event')}"
        inner = f"SELECT {expr} AS v FROM events x WHERE {where} ORDER BY x.timestamp DESC LIMIT {VALUE_SAMPLE_ROWS}"
    where = "v IS NOT NULL"
    if search:
        where += " AND " + dialect.ilike_contains("v", p.add(search, "search"))
    sql = f"SELECT v, count(*) AS n FROM ({inner}) WHERE {where} GROUP BY v ORDER BY n DESC, v LIMIT {int(limit)}"
    return [{"name": v, "count": n} for v, n in storage.execute(sql, p.values).rows]


# -- HTTP ---------------------------------------------------------------------------------------
def _kind(request: Request) -> str:
    kind = request.query_params.get("type", "event")
    if kind not in ("event", "person"):
        raise InvalidInput("type is event or person.", attr="type")
    return kind


def _limit(request: Request, default: int, top: int) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= top:
        raise InvalidInput(f"limit is a whole number from 1 to {top}.", attr="limit")
    return int(raw)


def _search(items: list[dict], search: str | None) -> list[dict]:
    if not search:
        return items
    needle = search.lower()
    return [i for i in items if needle in str(i["name"]).lower()]


async def event_definitions(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        limit = _limit(request, MAX_RESULTS, MAX_RESULTS)
        items = await run_in_threadpool(_cached, ("events", project.id),
                                        lambda: event_names(core.storage, project.id), core)
    except SightlineError as exc:
        return error_response(exc)
    found = _search(items, request.query_params.get("search"))
    return json_response({"count": len(found), "next": None, "results": found[:limit]})


async def property_definitions(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        kind = _kind(request)
        limit = _limit(request, MAX_RESULTS, MAX_RESULTS)
        raw = request.query_params.get("event_names") or ""
        events = sorted({e for e in (request.query_params.getlist("event_name") + raw.split(",")) if e})
        if kind == "person":
            events = []
        items = await run_in_threadpool(_cached, ("props", project.id, kind, tuple(events)),
                                        lambda: property_names(core.storage, project.id, kind, events), core)
    except SightlineError as exc:
        return error_response(exc)
    found = _search(items, request.query_params.get("search"))
    return json_response({"count": len(found), "next": None, "results": found[:limit]})


async def property_values(request: Request) -> Response:
    """PostHog's shape: a JSON list of ``{"name": value, "count": n}``, most frequent first."""
    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        kind = _kind(request)
        key = request.query_params.get("key")
        if not key:
            raise InvalidInput("Name the property: ?key=<property name>.", attr="key")
        if len(key) > 400:
            raise InvalidInput("The property name is too long.", attr="key")
        limit = _limit(request, 50, 500)
        event = request.query_params.get("event_name") or None
        search = request.query_params.get("value") or None
        items = await run_in_threadpool(
            _cached, ("values", project.id, kind, key, event, search, limit),
            lambda: property_values_of(core.storage, project.id, kind, key, event, search, limit), core)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(items)

