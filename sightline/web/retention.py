"""`POST /api/projects/<id>/prune/`: retention on demand (``sightline prune`` through the server)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sightline.errors import InvalidInput, SightlineError
from sightline.web.http import error_response, json_response, require_api_key


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidInput(f"{name} is true or false.", attr=name)
    return raw in ("true", "1", "yes")


async def prune(request: Request) -> Response:
    """Query ``dry_run=true`` counts without deleting; ``before`` (query or JSON body) is a date,
    an ISO timestamp or relative (``-30d``); without it the project's ``retention_days`` apply."""
    from sightline.ops.prune import prune as run_prune
    from sightline.web.http import read_json_object

    try:
        require_api_key(request)
        core = request.app.state.core
        project = core.resolve_project(request.path_params["project_id"])
        dry_run = _flag(request, "dry_run")
        before = request.query_params.get("before")
        if int(request.headers.get("content-length") or 0) > 0:
            body = await read_json_object(request, core.settings.max_body_bytes)
            unknown = set(body) - {"before", "dry_run"}
            if unknown:
                raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.", attr=sorted(unknown)[0])
            if body.get("before") is not None:
                if not isinstance(body["before"], str):
                    raise InvalidInput("before is a date, an ISO timestamp or relative (-30d).", attr="before")
                before = body["before"]
            if "dry_run" in body:
                if not isinstance(body["dry_run"], bool):
                    raise InvalidInput("dry_run is true or false.", attr="dry_run")
                dry_run = body["dry_run"]
        result = await run_in_threadpool(run_prune, core, project_id=project.id, before=before, dry_run=dry_run)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(result)
