"""`/api/projects/<id>/cohorts/`: create, list, change and delete cohorts; list their persons."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sightline.errors import InvalidInput, SightlineError
from sightline.query import cohorts as service
from sightline.web.http import error_response, json_response, read_body, read_json_object, require_api_key


async def _body(request: Request) -> dict:
    limit = request.app.state.core.settings.max_body_bytes
    if request.headers.get("content-type", "").startswith("text/csv"):
        return {"csv": (await read_body(request, limit)).decode("utf-8", "replace")}
    return await read_json_object(request, limit)


def _ids(request: Request):
    core = request.app.state.core
    project = core.resolve_project(request.path_params["project_id"])
    cid = request.path_params.get("cohort_id")
    if cid is not None:
        try:
            cid = int(cid)
        except ValueError:
            raise InvalidInput("Cohort ids are numbers.", attr="id") from None
    return core, project.id, cid


async def collection(request: Request) -> Response:
    try:
        require_api_key(request)
        core, project_id, _ = _ids(request)
        if request.method == "POST":
            payload = await _body(request)
            return json_response(await run_in_threadpool(service.create, core, project_id, payload), status=201)
        rows = [r for r in core.meta.cohort_rows(project_id) if not r["deleted"]]
        return json_response({"results": [service.cohort_json(r) for r in rows], "next": None})
    except SightlineError as exc:
        return error_response(exc)


async def item(request: Request) -> Response:
    try:
        require_api_key(request)
        core, project_id, cid = _ids(request)
        if request.method == "GET":
            return json_response(await run_in_threadpool(service.get, core, project_id, cid))
        if request.method == "DELETE":
            await run_in_threadpool(service.delete, core, project_id, cid)
            return Response(status_code=204)
        payload = await _body(request)
        return json_response(await run_in_threadpool(service.update, core, project_id, cid, payload))
    except SightlineError as exc:
        return error_response(exc)


async def persons(request: Request) -> Response:
    try:
        require_api_key(request)
        core, project_id, cid = _ids(request)
        q = request.query_params
        try:
            limit, offset = int(q.get("limit", 100)), int(q.get("offset", 0))
        except ValueError:
            raise InvalidInput("`limit` and `offset` are numbers.", attr="limit") from None
        service._row(core, project_id, cid)
        rows = await run_in_threadpool(service.members, core, project_id, cid, min(max(limit, 1), 10_000),
                                       max(offset, 0))
        return json_response({"results": rows})
    except SightlineError as exc:
        return error_response(exc)
