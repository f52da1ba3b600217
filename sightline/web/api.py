"""The read-back API (secret key): `/api/projects/<id>/events/` and `/persons/`, PostHog-shaped."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sightline.errors import InvalidInput, NotFound, SightlineError
from sightline.query.records import Page, list_events, list_persons
from sightline.web.http import error_response, json_response, require_api_key


def _next_url(request: Request, page: Page) -> str | None:
    if page.cursor is None:
        return None
    params = dict(request.query_params)
    params["cursor"] = page.cursor
    return str(request.url.replace(query=urlencode(params)))


async def events(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        q = request.query_params
        await run_in_threadpool(core.sync)
        page = await run_in_threadpool(
            list_events, core.storage, project.id, event=q.get("event"), distinct_id=q.get("distinct_id"),
            person_id=q.get("person_id"), after=q.get("after"), before=q.get("before"),
            limit=q.get("limit"), cursor=q.get("cursor"))
    except SightlineError as exc:
        return error_response(exc)
    return json_response({"results": page.results, "next": _next_url(request, page)})


async def persons(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        q = request.query_params
        await run_in_threadpool(core.sync)
        page = await run_in_threadpool(
            list_persons, core.storage, project.id, distinct_id=q.get("distinct_id"),
            search=q.get("search"), limit=q.get("limit"), cursor=q.get("cursor"))
    except SightlineError as exc:
        return error_response(exc)
    return json_response({"results": page.results, "next": _next_url(request, page)})


async def person(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        await run_in_threadpool(core.sync)
        page = await run_in_threadpool(list_persons, core.storage, project.id,
                                       person_id=request.path_params["person_id"], limit=1)
        if not page.results:
            raise NotFound("Person not found.")
    except SightlineError as exc:
        return error_response(exc)
    return json_response(page.results[0])


async def query(request: Request) -> Response:
    """`POST /api/projects/<id>/query/` with `{"query": {...}}`: every insight kind and SQL."""
    from sightline.query.runner import run_query
    from sightline.web.http import read_json_object

    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        payload = await read_json_object(request, core.settings.max_body_bytes)
        if "query" not in payload:
            raise InvalidInput('Send {"query": {"kind": ..., ...}}.', code="invalid_query")
        result = await run_in_threadpool(run_query, core, payload["query"], project_id=project.id)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(result)


PROJECT_SETTINGS = {"test_account_filters", "path_cleaning_filters", "week_start_day", "anonymize_ips",
                    "data_retention_days", "query_timeout_seconds", "retention_days",
                    "store_ip", "trusted_proxies"}  # store_ip, trusted_proxies: sightline.web.client_ip


def project_json(project) -> dict:
    return {"id": project.id, "name": project.name, "api_token": project.api_token, "timezone": project.timezone,
            "created_at": project.created_at, **{k: project.settings.get(k) for k in sorted(PROJECT_SETTINGS)}}


async def project(request: Request) -> Response:
    """`GET/PATCH /api/projects/<id>/`: name, time zone and query settings."""
    from sightline.query.dates import zone
    from sightline.query.model import PropertyFilter
    from sightline.web.http import read_json_object

    try:
        require_api_key(request)
        core = request.app.state.core
        proj = core.resolve_project(request.path_params["project_id"])
        if request.method == "PATCH":
            payload = await read_json_object(request, core.settings.max_body_bytes)
            unknown = set(payload) - PROJECT_SETTINGS - {"name", "timezone"}
            if unknown:
                raise InvalidInput(f"Unknown project fields: {', '.join(sorted(unknown))}.", attr=sorted(unknown)[0])
            if "timezone" in payload:
                zone(str(payload["timezone"]))
            for f in payload.get("test_account_filters") or []:
                try:
                    PropertyFilter.model_validate(f)
                except Exception as exc:  # pydantic's ValidationError
                    raise InvalidInput(f"Invalid test account filter {f!r}: {exc}", attr="test_account_filters") from None
            timeout = payload.get("query_timeout_seconds")
            if timeout is not None and (not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600):
                raise InvalidInput("query_timeout_seconds is a number of seconds from 0 to 3600.",
                                   attr="query_timeout_seconds")
            if "retention_days" in payload:  # sightline.ops.prune: 1..3650 days, or null
                from sightline.ops.prune import validate_retention_days

                validate_retention_days(payload["retention_days"])
            if "store_ip" in payload or "trusted_proxies" in payload:  # sightline.web.client_ip
                from sightline.web.client_ip import validate_ip_settings

                validate_ip_settings(payload)
            if "week_start_day" in payload and payload["week_start_day"] not in (0, 1):
                raise InvalidInput("week_start_day is 0 (Sunday) or 1 (Monday).", attr="week_start_day")
            settings = {k: v for k, v in payload.items() if k in PROJECT_SETTINGS}
            proj = core.meta.update_project(proj.id, name=payload.get("name"), timezone_name=payload.get("timezone"),
                                            settings=settings)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(project_json(proj))


# -- persons: GDPR deletion, unmerge, split, merge log, audit trail (sightline.persons.admin) ------
def _actor(request: Request) -> str:
    """Who asks, for the audit log: the CLI, a signed-in user, or the API key's label."""
    import hmac

    from sightline.web.http import bearer_token

    token = bearer_token(request)
    if token is None:
        from sightline.web.ui.auth import check_session

        session = check_session(request)
        return f"user {session.email}" if session is not None else "unknown"
    control = getattr(request.app.state, "control_token", None)
    if control is not None and hmac.compare_digest(token, control):
        return "cli"
    return "api key " + (request.app.state.core.meta.api_key_label(token) or "?")


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise InvalidInput(f"`{name}` is true or false, not {value[:20]!r}.", attr=name)


def _person_id(request: Request) -> str:
    import uuid

    raw = request.path_params["person_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound("Person not found.") from None


async def person_delete(request: Request) -> Response:
    """`DELETE .../persons/<id>/?delete_events=true`: the person, its distinct ids and (with
    ``delete_events``) its events are removed from storage; the audit log records it."""
    from sightline.persons import admin

    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        with_events = _flag(request, "delete_events")
        result = await run_in_threadpool(admin.delete_person, core, project.id, person_id=_person_id(request),
                                         with_events=with_events, actor=_actor(request))
    except SightlineError as exc:
        return error_response(exc)
    return json_response(result)


async def person_or_delete(request: Request) -> Response:
    if request.method == "DELETE":
        return await person_delete(request)
    return await person(request)


async def person_unmerge(request: Request) -> Response:
    """`POST .../persons/<id>/unmerge/` with `{"merge_id": n}` or `{"distinct_id": "..."}`."""
    from sightline.persons import admin
    from sightline.web.http import read_json_object

    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        payload = await read_json_object(request, core.settings.max_body_bytes)
        unknown = set(payload) - {"merge_id", "distinct_id"}
        if unknown:
            raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.", attr=sorted(unknown)[0])
        merge_id, distinct_id = payload.get("merge_id"), payload.get("distinct_id")
        if merge_id is not None and (not isinstance(merge_id, int) or isinstance(merge_id, bool)):
            raise InvalidInput("`merge_id` is an integer.", attr="merge_id")
        if distinct_id is not None and not isinstance(distinct_id, str):
            raise InvalidInput("`distinct_id` is a string.", attr="distinct_id")
        if merge_id is None and distinct_id is None:
            raise InvalidInput('Send {"merge_id": <id from .../merges/>} or {"distinct_id": "<id to take back out>"}.',
                               code="invalid_unmerge")
        result = await run_in_threadpool(admin.unmerge, core, project.id, merge_id=merge_id,
                                         distinct_id=distinct_id, person_id=_person_id(request),
                                         actor=_actor(request))
    except SightlineError as exc:
        return error_response(exc)
    return json_response(result)


async def person_split(request: Request) -> Response:
    """PostHog's `POST .../persons/<id>/split/` (optional `{"main_distinct_id": "..."}`)."""
    from sightline.persons import admin
    from sightline.web.http import read_json_object

    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        payload = await read_json_object(request, core.settings.max_body_bytes)
        main = payload.get("main_distinct_id")
        if main is not None and not isinstance(main, str):
            raise InvalidInput("`main_distinct_id` is a string.", attr="main_distinct_id")
        result = await run_in_threadpool(admin.split, core, project.id, person_id=_person_id(request),
                                         main_distinct_id=main, actor=_actor(request))
    except SightlineError as exc:
        return error_response(exc)
    return json_response({"success": True, **result})


async def person_merges(request: Request) -> Response:
    """`GET .../persons/<id>/merges/`: the merges into (or of) this person, newest first."""
    from sightline.persons import admin

    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        rows = await run_in_threadpool(admin.merges, core, project.id, person_id=_person_id(request))
    except SightlineError as exc:
        return error_response(exc)
    return json_response({"results": rows})


async def audit_log(request: Request) -> Response:
    """`GET .../audit_log/?action=&person_id=&limit=&before=`: data-protection operations."""
    from sightline.persons import admin

    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        q = request.query_params
        limit = q.get("limit") or "100"
        before = q.get("before")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise InvalidInput("`limit` is an integer from 1 to 1000.", attr="limit")
        if before is not None and not before.isdigit():
            raise InvalidInput("`before` is an audit entry id.", attr="before")
        rows = await run_in_threadpool(admin.audit_log, core, project.id, action=q.get("action"),
                                       person_id=q.get("person_id"), limit=int(limit),
                                       before_id=int(before) if before else None)
    except SightlineError as exc:
        return error_response(exc)
    return json_response({"results": rows})


# -- live events for the web app: filter by event and properties, poll for new arrivals -----------
LIVE_MAX_LIMIT = 500


def _live_events(core, project_id: int, q) -> dict:
    """Newest events (by timestamp) matching ``event`` and ``properties`` (PostHog property
    filters, JSON); with ``since`` (a ``latest`` value from an earlier answer) only events stored
    after it, so a page can poll. Values are bound parameters; keys go through the dialect."""
    import orjson
    from pydantic import ValidationError

    from sightline.query.dialect import dialect_for
    from sightline.query.filters import Scope, properties_sql
    from sightline.query.model import PropertyFilter
    from sightline.query.records import _iso, _limit, _ts_param

    limit = min(_limit(q.get("limit") or "100"), LIVE_MAX_LIMIT)
    scope = Scope(project_id, dialect_for(core.storage))
    where = [f"e.project_id = {scope.project}"]
    if q.get("event"):
        where.append(f"e.event = {scope.params.add(q['event'], 'event')}")
    if q.get("distinct_id"):
        where.append(f"e.distinct_id = {scope.params.add(q['distinct_id'], 'distinct_id')}")
    raw = q.get("properties")
    if raw:
        try:
            items = orjson.loads(raw)
            if not isinstance(items, list):
                raise ValueError
            filters = [PropertyFilter.model_validate(f) for f in items]
        except (ValueError, orjson.JSONDecodeError, ValidationError):
            raise InvalidInput('`properties` is a JSON list of filters such as '
                               '[{"key": "$browser", "value": "Chrome", "operator": "exact", "type": "event"}].',
                               attr="properties") from None
        for f in filters:
            if f.type not in ("event", "person"):
                raise InvalidInput("Live events filter on event or person properties only.", attr="properties")
        where.append(properties_sql(filters, scope))
    since = _ts_param("since", q.get("since"))
    if since is not None:
        where.append(f"e.created_at > {scope.params.add(since, 'since')}")
    order = "e.created_at DESC, e.timestamp DESC" if since is not None else "e.timestamp DESC, e.uuid DESC"
    # as in sightline.query.records.list_events: find the page on narrow columns, then read the
    # wide ones only for its rows (bounded by the page's time range)
    top = core.storage.execute(
        f"SELECT e.timestamp, CAST(e.uuid AS VARCHAR) FROM events e{scope.joins()} "
        f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {scope.params.add(limit, 'limit')}",
        scope.params.values).rows
    rows = []
    if top:
        rows = core.storage.execute(
            f"SELECT CAST(e.uuid AS VARCHAR), e.event, e.distinct_id, e.properties, e.timestamp, "
            f"CAST({PERSON_ID_SQL} AS VARCHAR), e.created_at FROM events e LEFT JOIN person_overrides o "
            f"ON o.project_id = e.project_id AND o.old_person_id = e.person_id WHERE e.project_id = $project "
            f"AND e.timestamp >= $lo AND e.timestamp <= $hi AND {scope.dialect.has('$uuids', 'CAST(e.uuid AS VARCHAR)')}",
            {"project": project_id, "lo": min(t for t, _ in top), "hi": max(t for t, _ in top),
             "uuids": [u for _, u in top]}).rows
    # personless events (``$process_person_profile: false``) have no person to link to
    ids = sorted({r[5] for r in rows if r[5]})
    known = {r[0] for r in core.storage.execute(
        f"SELECT CAST(id AS VARCHAR) FROM persons WHERE project_id = $project AND "
        f"{scope.dialect.has('$ids', 'CAST(id AS VARCHAR)')}", {"project": project_id, "ids": ids}).rows} if ids else set()
    results = [{"id": r[0], "uuid": r[0], "event": r[1], "distinct_id": r[2],
                "properties": orjson.loads(r[3]) if r[3] else {}, "timestamp": _iso(r[4]),
                "person_id": r[5] if r[5] in known else None, "created_at": _iso(r[6])} for r in rows]
    results.sort(key=lambda e: e["timestamp"], reverse=True)
    latest = max((r[6] for r in rows), default=since)
    if since is None:  # the next poll asks for events stored after everything stored so far
        newest = core.storage.execute("SELECT max(created_at) FROM events WHERE project_id = $p",
                                      {"p": project_id}).rows
        latest = newest[0][0] if newest and newest[0][0] is not None else latest
    return {"results": results, "latest": _iso(latest) if latest is not None else None}


PERSON_ID_SQL = "coalesce(o.override_person_id, e.person_id)"


async def live_events(request: Request) -> Response:
    """`GET .../live_events/?event=&properties=[...]&distinct_id=&since=&limit=` (web app)."""
    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        await run_in_threadpool(core.sync)
        out = await run_in_threadpool(_live_events, core, project.id, request.query_params)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(out)
