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
                    "data_retention_days", "query_timeout_seconds", "retention_days"}


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
            if "week_start_day" in payload and payload["week_start_day"] not in (0, 1):
                raise InvalidInput("week_start_day is 0 (Sunday) or 1 (Monday).", attr="week_start_day")
            settings = {k: v for k, v in payload.items() if k in PROJECT_SETTINGS}
            proj = core.meta.update_project(proj.id, name=payload.get("name"), timezone_name=payload.get("timezone"),
                                            settings=settings)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(project_json(proj))
