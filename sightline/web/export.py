"""``GET /api/projects/{project_id}/export/``: a project's events as a streamed file (secret key).

Query parameters: ``format`` (``jsonl``, the default, or ``parquet``), ``event`` (repeatable),
``after`` (inclusive) and ``before`` (exclusive): a date, an ISO timestamp or relative (``-7d``).
The arguments are checked and the export planned before the answer starts (bad input is a 4xx
JSON error); then the body is the file, streamed in constant memory: JSON lines batch by batch,
Parquet row group by row group (:func:`sightline.ops.export.export_chunks`, the same bytes
``sightline export`` writes itself). ``X-Sightline-Export-Rows`` says how many events were
planned. A failure in the middle cuts the connection (the chunked body has no end), so a client
never mistakes a partial file for a complete one. ``sightline export`` uses this endpoint when a
server runs on the data directory.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sightline.errors import InvalidInput, SightlineError
from sightline.ops import export as ex
from sightline.web.http import error_response, require_api_key

PARAMS = {"format", "event", "after", "before"}
MEDIA = {"jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}


async def export(request: Request) -> Response:
    core = request.app.state.core
    try:
        require_api_key(request)
        q = request.query_params
        unknown = sorted(set(q.keys()) - PARAMS)
        if unknown:
            raise InvalidInput(f"Unknown parameter {unknown[0]!r}; the export takes format, event, after "
                               "and before.", attr=unknown[0])
        fmt = ex.check_format(q.get("format") or "jsonl")
        events = [e for e in q.getlist("event") if e]
        project = core.resolve_project(request.path_params["project_id"])
        plan = await run_in_threadpool(ex.plan_export, core, project_id=project.id, events=events,
                                       after=q.get("after"), before=q.get("before"))
    except SightlineError as exc:
        return error_response(exc)
    name = f"events-project-{project.id}.{fmt}"
    headers = {ex.ROWS_HEADER: str(plan.rows), "Content-Disposition": f'attachment; filename="{name}"',
               "Cache-Control": "no-store"}
    # a sync iterator: Starlette pulls each chunk in a worker thread
    return StreamingResponse(ex.export_chunks(core, plan, fmt), media_type=MEDIA[fmt], headers=headers)


def routes() -> list[Route]:
    base = "/api/projects/{project_id}/export"
    return [Route(base + "/", export, methods=["GET"]), Route(base, export, methods=["GET"])]
