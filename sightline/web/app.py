"""The ASGI application: every HTTP door of one Sightline process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sightline.core import Sightline
from sightline.errors import SightlineError
from sightline.flags import http as flags_http
from sightline.web import api, capture, cohorts, retention, sdk
from sightline.web.http import CORSMiddleware, error_response, json_response, require_api_key
from sightline.web.ui import routes as ui_routes

log = logging.getLogger("sightline.web")

ANY = ["GET", "POST", "HEAD"]


def _both(path: str) -> list[str]:
    return [path, path + "/"]


async def health(request: Request) -> Response:
    core: Sightline = request.app.state.core
    return json_response({"status": "ok", "pending_events": core.writer.pending_events})


async def metrics(request: Request) -> Response:
    """Prometheus text format (secret key); see :mod:`sightline.metrics` for the names."""
    try:
        require_api_key(request)
    except SightlineError as exc:
        return error_response(exc)
    from sightline.ops.http import log_bytes

    core: Sightline = request.app.state.core
    w = core.writer
    gauges = {"ingestion_pending_events": w.pending_events,
              "ingestion_unflushed_events": w.unflushed_events,
              "ingestion_lag_seconds": round(w.lag_seconds, 3),
              "ingestion_log_bytes": log_bytes(core.data_dir),
              "writer_last_commit_seconds": w.stats.last_commit_seconds,
              "writer_last_flush_seconds": w.stats.last_flush_seconds}
    counters = {"writer_batches_total": w.stats.batches,
                "writer_events_stored_total": w.stats.events_stored,
                "writer_duplicates_total": w.stats.duplicates,
                "writer_flushes_total": w.stats.flushes,
                "writer_failures_total": w.stats.failures}
    return PlainTextResponse(core.metrics.render(gauges, counters), media_type="text/plain; version=0.0.4")


async def not_found(request: Request, exc: Exception) -> Response:
    return json_response({"type": "invalid_request", "code": "not_found",
                          "detail": f"No endpoint at {request.url.path}.", "attr": None}, status=404)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return json_response({"type": "invalid_request", "code": "method_not_allowed",
                          "detail": f"{request.method} is not allowed on {request.url.path}.",
                          "attr": None}, status=405)


def routes() -> list[Route]:
    out: list[Route] = []
    for path in ("/e", "/i/v0/e", "/capture", "/track", "/engage", "/batch"):
        for p in _both(path):
            out.append(Route(p, capture.capture, methods=["GET", "POST"]))
    for p in _both("/s"):
        out.append(Route(p, capture.recordings, methods=["GET", "POST"]))
    for p in _both("/i/v1/analytics/events"):
        out.append(Route(p, capture.capture_v1, methods=["POST"]))
    out.append(Route("/array/{token}/config", sdk.array_config, methods=["GET"]))
    out.append(Route("/array/{token}/config.js", sdk.array_config_js, methods=["GET"]))
    for path in ("/flags", "/decide"):
        for p in _both(path):
            out.append(Route(p, sdk.flags, methods=ANY))
    out += flags_http.routes()  # flag definitions, remote config, /api/projects/{id}/feature_flags/
    from sightline.experiments import http as experiments_http

    out += experiments_http.routes()  # /api/projects/{id}/experiments/
    out.append(Route("/_health", health, methods=["GET"]))
    out.append(Route("/metrics", metrics, methods=["GET"]))
    from sightline.ops import http as ops_http

    out += ops_http.routes()  # /api/ops/backup, /api/ops/status
    from sightline.web import export as export_http

    out += export_http.routes()  # /api/projects/{id}/export/ (sightline export)
    base = "/api/projects/{project_id}"
    out.append(Route(base + "/", api.project, methods=["GET", "PATCH"]))
    out.append(Route(base + "/events/", api.events, methods=["GET"]))
    out.append(Route(base + "/persons/", api.persons, methods=["GET"]))
    out.append(Route(base + "/persons/{person_id}/", api.person_or_delete, methods=["GET", "DELETE"]))
    out.append(Route(base + "/persons/{person_id}/unmerge/", api.person_unmerge, methods=["POST"]))
    out.append(Route(base + "/persons/{person_id}/split/", api.person_split, methods=["POST"]))
    out.append(Route(base + "/persons/{person_id}/merges/", api.person_merges, methods=["GET"]))
    out.append(Route(base + "/audit_log/", api.audit_log, methods=["GET"]))
    out.append(Route(base + "/live_events/", api.live_events, methods=["GET"]))  # web app: Live events
    out.append(Route(base + "/query/", api.query, methods=["POST"]))
    out.append(Route(base + "/prune/", retention.prune, methods=["POST"]))  # sightline.ops.prune
    out.append(Route(base + "/cohorts/", cohorts.collection, methods=["GET", "POST"]))
    out.append(Route(base + "/cohorts/{cohort_id}/", cohorts.item, methods=["GET", "PATCH", "DELETE"]))
    out.append(Route(base + "/cohorts/{cohort_id}/persons/", cohorts.persons, methods=["GET"]))
    out.append(Route(base + "/query", api.query, methods=["POST"]))
    out += ui_routes.api_routes()  # web app: sign-in, autocomplete, insights, dashboards
    # keep last: `/`, /static and the single-page app's fallback for UI paths
    out += ui_routes.page_routes()
    return out


def create_app(core: Sightline) -> Starlette:
    """Build the app around an opened :class:`Sightline`; the writer stops when the app does."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        core.writer  # start the writer before the first request
        # The identity graph is a large, long-lived heap: keep the cyclic garbage collector from
        # walking it again and again (it made the write path several times slower).
        gc.freeze()
        # retention and compaction: after start, then daily (SIGHTLINE_RETENTION_INTERVAL seconds)
        from sightline.ops.prune import retention_loop

        retention = asyncio.create_task(retention_loop(core, app.state))
        try:
            yield
        finally:
            retention.cancel()
            with contextlib.suppress(BaseException):
                await retention
            log.info("shutting down: writing queued events")
            core.close()

    app = Starlette(routes=routes(), lifespan=lifespan,
                    exception_handlers={404: not_found, 405: method_not_allowed})
    app.state.core = core
    app.state.flags = core.flags
    ui_routes.install(app)  # web app state: setup code, login limiter, assets, default dashboard
    app.add_middleware(capture.CaptureFastPath)  # inside CORS: capture requests skip the router
    app.add_middleware(CORSMiddleware)
    return app
