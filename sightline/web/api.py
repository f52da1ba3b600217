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
    from sightline.web.http import read_body
    import orjson

    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        body = await read_body(request, core.settings.max_body_bytes)
        try:
            payload = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"The body is not JSON: {exc}", code="invalid_json") from None
        if not isinstance(payload, dict) or "query" not in payload:
            raise InvalidInput('Send {"query": {"kind": ..., ...}}.', code="invalid_query")
        result = await run_in_threadpool(run_query, core, payload["query"], project_id=project.id)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(result)
