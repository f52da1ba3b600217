"""HTTP doors of feature flags: the management API and what server-side SDKs fetch with a secret
key (local-evaluation definitions, remote-config payloads). ``/flags`` and ``/decide`` live in
:mod:`sightline.web.sdk`. Every handler only parses and formats; the work is in
:class:`~sightline.flags.service.FlagService`.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sightline.errors import AuthenticationFailed, InvalidInput, NotFound, SightlineError
from sightline.web.http import bearer_token, error_response, json_response, read_body, require_api_key

MAX_BODY = 2 * 1024 * 1024


def _actor(request: Request) -> str | None:
    require_api_key(request)
    token = bearer_token(request)
    if token is None:  # the web app's session
        from sightline.web.ui.auth import check_session

        session = check_session(request)
        return f"user {session.email}" if session is not None else None
    return request.app.state.core.meta.api_key_label(token)


async def _json_body(request: Request):
    body = await read_body(request, MAX_BODY)
    if not body.strip():
        raise InvalidInput("The request body must be a JSON object.", code="invalid_json", attr="body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"The request body is not valid JSON: {exc}.", code="invalid_json",
                           attr="body") from None


def _project_id(request: Request) -> int:
    return request.app.state.core.resolve_project(request.path_params.get("project_id")).id


async def flags_collection(request: Request) -> Response:
    core = request.app.state.core
    try:
        actor = _actor(request)
        pid = _project_id(request)
        if request.method == "GET":
            results = core.flags.list_flags(pid)
            return json_response({"count": len(results), "next": None, "previous": None,
                                  "results": results})
        flag = core.flags.create_flag(pid, await _json_body(request), actor)
        return json_response(flag, status=201)
    except SightlineError as exc:
        return error_response(exc)


async def flag_item(request: Request) -> Response:
    core = request.app.state.core
    try:
        actor = _actor(request)
        pid = _project_id(request)
        fid = request.path_params["flag_id"]
        if request.method == "GET":
            return json_response(core.flags.get_flag(pid, fid))
        if request.method == "DELETE":
            core.flags.delete_flag(pid, fid, actor)
            return Response(status_code=204)
        return json_response(core.flags.update_flag(pid, fid, await _json_body(request), actor))
    except SightlineError as exc:
        return error_response(exc)


async def flag_activity(request: Request) -> Response:
    core = request.app.state.core
    try:
        _actor(request)
        results = core.flags.activity(_project_id(request), request.path_params["flag_id"])
        return json_response({"count": len(results), "next": None, "previous": None, "results": results})
    except SightlineError as exc:
        return error_response(exc)


def _project_from_token(request: Request):
    token = request.query_params.get("token")
    if not token:
        raise InvalidInput("Pass the project token as `?token=`.", code="missing_token", attr="token")
    project = request.app.state.core.meta.project_by_token(token)
    if project is None:
        raise AuthenticationFailed("No project has this token.", code="invalid_token")
    return project


async def definitions(request: Request) -> Response:
    """``/flags/definitions`` and ``/api/feature_flag/local_evaluation``: the local-eval payload."""
    core = request.app.state.core
    try:
        require_api_key(request)
        project = _project_from_token(request)
    except SightlineError as exc:
        return error_response(exc)
    q = request.query_params
    send_cohorts = "send_cohorts" in q and q.get("send_cohorts", "").lower() not in ("0", "false", "no", "off")
    body, etag = core.flags.definitions(project.id, send_cohorts)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    inm = request.headers.get("if-none-match")
    if inm and etag in {t.strip().removeprefix("W/") for t in inm.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def remote_config(request: Request) -> Response:
    """``/api/projects/@current/feature_flags/<key>/remote_config?token=``: a flag's payload."""
    core = request.app.state.core
    try:
        require_api_key(request)
        token = request.query_params.get("token")
        if token:
            project = _project_from_token(request)
        else:
            project = core.resolve_project(request.path_params.get("project_id"))
        payload = core.flags.remote_config_payload(project.id, request.path_params["key"])
    except SightlineError as exc:
        return error_response(exc)
    return json_response(payload)


def routes() -> list[Route]:
    base = "/api/projects/{project_id}/feature_flags"
    out = [Route("/flags/definitions", definitions, methods=["GET"]),
           Route("/flags/definitions/", definitions, methods=["GET"]),
           Route("/api/feature_flag/local_evaluation", definitions, methods=["GET"]),
           Route("/api/feature_flag/local_evaluation/", definitions, methods=["GET"])]
    for suffix in ("", "/"):
        out += [Route(base + suffix, flags_collection, methods=["GET", "POST"]),
                Route(base + "/{flag_id:int}" + suffix, flag_item, methods=["GET", "PATCH", "DELETE"]),
                Route(base + "/{flag_id:int}/activity" + suffix, flag_activity, methods=["GET"]),
                Route(base + "/{key}/remote_config" + suffix, remote_config, methods=["GET"])]
    return out


__all__ = ["routes", "NotFound"]
