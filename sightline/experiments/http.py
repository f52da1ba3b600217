"""HTTP doors of experiments (secret key): ``/api/projects/{project_id}/experiments/``.

``GET/POST /experiments/``, ``GET/PATCH/DELETE /experiments/{id}/``, ``POST .../{id}/launch/``,
``POST .../{id}/stop/`` (body: optional ``shipped_variant``, ``end_date``, ``conclusion``),
``POST .../{id}/ship/`` (body: ``variant``), ``GET .../{id}/results/`` (``?cumulative=false`` leaves
out the day-by-day series; results are cached for up to 30 s while no new events are stored,
``?refresh=true`` recomputes), ``GET .../{id}/activity/``. Handlers parse and format; the work is in
:mod:`sightline.experiments.service` and :mod:`sightline.experiments.results`.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sightline.errors import InvalidInput, SightlineError
from sightline.web.http import (
    bearer_token,
    error_response,
    json_response,
    read_json_object,
    require_api_key,
)

MAX_BODY = 1024 * 1024


def service(core):
    from sightline.experiments.service import ExperimentService

    svc = getattr(core, "_experiments", None)
    if svc is None:
        svc = ExperimentService(core.meta, core.flags)
        core._experiments = svc
    return svc


def _actor(request: Request) -> str | None:
    require_api_key(request)
    token = bearer_token(request)
    if token is None:  # the web app's session
        from sightline.web.ui.auth import check_session

        session = check_session(request)
        return f"user {session.email}" if session is not None else None
    label = request.app.state.core.meta.api_key_label(token)
    return label or "control channel (CLI)"


def _project_id(request: Request) -> int:
    return request.app.state.core.resolve_project(request.path_params.get("project_id")).id


async def _body(request: Request, *, required: bool = True) -> dict:
    body = await read_json_object(request, MAX_BODY)
    if required and not body:
        raise InvalidInput("The request body must be a JSON object with the experiment's fields.",
                           code="invalid_json", attr="body")
    return body


def _optional(body: dict, *names: str) -> None:
    unknown = set(body) - set(names)
    if unknown:
        raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}; this action takes "
                           f"{', '.join(names) or 'no fields'}.", attr=sorted(unknown)[0])


def _page(results: list) -> dict:
    return {"count": len(results), "next": None, "previous": None, "results": results}


async def collection(request: Request) -> Response:
    core = request.app.state.core
    try:
        actor = _actor(request)
        pid = _project_id(request)
        svc = service(core)
        if request.method == "GET":
            return json_response(_page(svc.list_experiments(pid)))
        return json_response(svc.create(pid, await _body(request), actor), status=201)
    except SightlineError as exc:
        return error_response(exc)


async def item(request: Request) -> Response:
    core = request.app.state.core
    try:
        actor = _actor(request)
        pid = _project_id(request)
        eid = request.path_params["experiment_id"]
        svc = service(core)
        if request.method == "GET":
            return json_response(svc.get(pid, eid))
        if request.method == "DELETE":
            svc.delete(pid, eid, actor)
            return Response(status_code=204)
        return json_response(svc.update(pid, eid, await _body(request), actor))
    except SightlineError as exc:
        return error_response(exc)


async def launch(request: Request) -> Response:
    core = request.app.state.core
    try:
        actor = _actor(request)
        body = await _body(request, required=False)
        _optional(body, "start_date")
        return json_response(service(core).launch(_project_id(request), request.path_params["experiment_id"],
                                                  actor, start_date=body.get("start_date")))
    except SightlineError as exc:
        return error_response(exc)


async def stop(request: Request) -> Response:
    core = request.app.state.core
    try:
        actor = _actor(request)
        body = await _body(request, required=False)
        _optional(body, "shipped_variant", "end_date", "conclusion", "conclusion_comment")
        return json_response(service(core).stop(
            _project_id(request), request.path_params["experiment_id"], actor,
            shipped_variant=body.get("shipped_variant"), end_date=body.get("end_date"),
            conclusion=body.get("conclusion"), conclusion_comment=body.get("conclusion_comment")))
    except SightlineError as exc:
        return error_response(exc)


async def ship(request: Request) -> Response:
    core = request.app.state.core
    try:
        actor = _actor(request)
        body = await _body(request, required=False)
        _optional(body, "variant", "shipped_variant")
        variant = body.get("variant", body.get("shipped_variant"))
        if variant is None:
            raise InvalidInput("Say which variant to ship: {\"variant\": \"test\"}.", code="required",
                               attr="variant")
        return json_response(service(core).ship(_project_id(request), request.path_params["experiment_id"],
                                                variant, actor))
    except SightlineError as exc:
        return error_response(exc)


def _bool_param(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidInput(f"`{name}` must be true or false.", attr=name)
    return value.lower() in ("true", "1", "yes")


async def results(request: Request) -> Response:
    from sightline.experiments import results as res

    core = request.app.state.core
    try:
        require_api_key(request)
        project = core.resolve_project(request.path_params.get("project_id"))
        exp = service(core).get(project.id, request.path_params["experiment_id"])
        cumulative = _bool_param(request, "cumulative", True)
        refresh = _bool_param(request, "refresh", False)
        out = await run_in_threadpool(res.cached, core, project, exp, cumulative=cumulative, refresh=refresh)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(out)


async def activity(request: Request) -> Response:
    core = request.app.state.core
    try:
        require_api_key(request)
        return json_response(_page(service(core).activity(_project_id(request),
                                                          request.path_params["experiment_id"])))
    except SightlineError as exc:
        return error_response(exc)


def routes() -> list[Route]:
    base = "/api/projects/{project_id}/experiments"
    item_path = base + "/{experiment_id:int}"
    out: list[Route] = []
    for s in ("", "/"):
        out += [Route(base + s, collection, methods=["GET", "POST"]),
                Route(item_path + s, item, methods=["GET", "PATCH", "DELETE"]),
                Route(item_path + "/launch" + s, launch, methods=["POST"]),
                Route(item_path + "/stop" + s, stop, methods=["POST"]),
                Route(item_path + "/ship" + s, ship, methods=["POST"]),
                Route(item_path + "/results" + s, results, methods=["GET"]),
                Route(item_path + "/activity" + s, activity, methods=["GET"])]
    return out
