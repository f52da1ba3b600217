"""Capture endpoints: the PostHog SDKs' write path (`/e/`, `/batch/`, `/i/v0/e/`, ...).

Handlers only parse and answer; decoding is :mod:`sightline.ingest.decode`, validation
:mod:`sightline.ingest.normalize`, and storage the core's writer. A request is answered 200
only after its events are committed.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sightline.errors import AuthenticationFailed, SightlineError
from sightline.ingest.decode import CaptureRequest, decode_capture, decode_v1_capture
from sightline.ingest.normalize import normalize_batch, parse_timestamp, request_token
from sightline.web.client_ip import apply_ip_policy, ip_policy
from sightline.web.http import bearer_token, error_response, json_response, read_body

UTC = timezone.utc
LEGACY_PATHS = frozenset({"/e", "/capture", "/track", "/engage", "/i/v0/e"})
INLINE_BODY_BYTES = 256 * 1024  # larger bodies are decoded off the event loop


def sent_at_of(req: CaptureRequest) -> datetime | None:
    """The request's ``sent_at``: the body's ISO value, else the query's ms epoch."""
    if req.sent_at:
        parsed = parse_timestamp(req.sent_at)
        if parsed is not None:
            return parsed
    if req.sent_at_ms:
        return datetime.fromtimestamp(req.sent_at_ms / 1000, tz=UTC)
    return None


def _process(core, body: bytes, query: dict, headers, path: str):
    """Decode, authenticate and validate one capture request (runs off the loop when large)."""
    settings = core.settings
    req = decode_capture(body, query=query, content_type=headers.get("content-type"),
                         content_encoding=headers.get("content-encoding"),
                         legacy=path in LEGACY_PATHS, max_bytes=settings.max_decoded_bytes)
    token = request_token(req.token or query.get("token") or query.get("api_key"), req.events)
    project = core.meta.project_by_token(token)
    if project is None:
        raise AuthenticationFailed("Project token is not valid.", code="invalid_token")
    # the decoded events are this request's own: normalized events may keep their dicts
    batch = normalize_batch(req.events, now=datetime.now(UTC), sent_at=sent_at_of(req), copy=False)
    return project, req, batch


async def _capture_in_worker(request: Request, pool, core, body: bytes, query: dict,
                             path: str) -> Response | None:
    """The request through a capture worker (``serve --capture-workers``); ``None``: do it inline
    (the worker could not prepare it, or the project's IP rule needs the request itself)."""
    headers = request.headers
    prepared = await pool.prepare(body, query, headers.get("content-type"), headers.get("content-encoding"),
                                  path in LEGACY_PATHS, core.settings.max_decoded_bytes)
    if prepared is None:
        return None
    project = core.meta.project_by_token(prepared.token)
    if project is None:
        return None  # the inline path gives the exact 401
    if ip_policy(project, request) is not None:
        return None  # the project keeps client IPs: the inline path sets them
    if prepared.received and not prepared.stored and prepared.rejected:
        return None  # the inline path gives the exact 400
    if prepared.stored:
        await asyncio.wrap_future(core.writer.submit_table(project.id, prepared.table, prepared.ts_us,
                                                           prepared.specials, in_loop=True))
    core.metrics.capture_request(received=prepared.received, stored=prepared.stored,
                                 rejected=prepared.rejected)
    if query.get("beacon") == "1":
        return Response(status_code=204)
    payload: dict = {"status": 1}
    if prepared.rejected:
        payload["rejected"] = [r.to_json() for r in prepared.rejected[:100]]
    return json_response(payload)


async def capture(request: Request) -> Response:
    core = request.app.state.core
    path = request.scope["path"].rstrip("/") or "/"  # (request.url builds a whole URL)
    query = dict(request.query_params)
    try:
        body = b"" if query.get("data") else await read_body(request, core.settings.max_body_bytes)
        pool = getattr(request.app.state, "capture_pool", None)
        if pool is not None:
            response = await _capture_in_worker(request, pool, core, body, query, path)
            if response is not None:
                return response
        if len(body) > INLINE_BODY_BYTES:
            project, req, batch = await run_in_threadpool(_process, core, body, query, request.headers, path)
        else:
            project, req, batch = _process(core, body, query, request.headers, path)
        if req.events and not batch.events and batch.rejected:
            core.metrics.capture_request(received=len(req.events), stored=0, rejected=batch.rejected)
            first = batch.rejected[0]
            return json_response({"type": "validation_error", "code": first.code,
                                  "detail": f"No valid event in the request. Event {first.index}: "
                                            f"{first.detail}",
                                  "attr": None,
                                  "rejected": [r.to_json() for r in batch.rejected[:100]]}, status=400)
        if batch.events:
            apply_ip_policy(batch.events, ip_policy(project, request))  # $ip: only if the project asks
            await asyncio.wrap_future(core.writer.submit(project.id, batch.events, in_loop=True))
        core.metrics.capture_request(received=len(req.events), stored=len(batch.events),
                                     rejected=batch.rejected)
    except SightlineError as exc:
        core.metrics.capture_error(exc.code)
        return error_response(exc)
    if query.get("beacon") == "1":
        return Response(status_code=204)
    payload: dict = {"status": 1}
    if batch.rejected:
        payload["rejected"] = [r.to_json() for r in batch.rejected[:100]]
    return json_response(payload)


async def capture_v1(request: Request) -> Response:
    """posthog-python's opt-in v1 endpoint: Bearer project token, per-event results."""
    core = request.app.state.core
    try:
        token = bearer_token(request)
        if not token:
            raise AuthenticationFailed("Send the project token as `Authorization: Bearer <token>`.",
                                       code="missing_token")
        project = core.meta.project_by_token(token)
        if project is None:
            raise AuthenticationFailed("Project token is not valid.", code="invalid_token")
        body = await read_body(request, core.settings.max_body_bytes)
        req = await run_in_threadpool(decode_v1_capture, body,
                                      content_encoding=request.headers.get("content-encoding"),
                                      max_bytes=core.settings.max_decoded_bytes)
        sdk = request.headers.get("posthog-sdk-info", "")
        lib, _, version = sdk.partition("/")
        if lib:
            for raw in req.events:
                if isinstance(raw, dict) and isinstance(raw.get("properties"), dict):
                    raw["properties"].setdefault("$lib", lib)
                    if version:
                        raw["properties"].setdefault("$lib_version", version)
        batch = normalize_batch(req.events, now=datetime.now(UTC), sent_at=None)
        if batch.events:
            apply_ip_policy(batch.events, ip_policy(project, request))
            await asyncio.wrap_future(core.writer.submit(project.id, batch.events, in_loop=True))
        core.metrics.capture_request(received=len(req.events), stored=len(batch.events),
                                     rejected=batch.rejected)
    except SightlineError as exc:
        core.metrics.capture_error(exc.code)
        return error_response(exc)
    results: dict = {}
    rejected = {r.index: r for r in batch.rejected}
    for i, raw in enumerate(req.events):
        uid = raw.get("uuid") if isinstance(raw, dict) else None
        if not isinstance(uid, str):
            continue
        if i in rejected:
            results[uid] = {"result": "drop", "details": f"{rejected[i].code}: {rejected[i].detail}"}
        else:
            results[uid] = {"result": "ok"}
    return json_response({"results": results})


async def recordings(request: Request) -> Response:
    """Session recordings are not stored by Sightline: answer as a quota-limited PostHog does,
    which makes posthog-js pause recording instead of retrying."""
    return json_response({"status": 1, "quota_limited": ["recordings"]})



# The capture routes of ``sightline.web.app.routes`` (each with and without the trailing slash).
CAPTURE_ROUTE_PATHS = frozenset(p for base in ("/e", "/i/v0/e", "/capture", "/track", "/engage", "/batch")
                                for p in (base, base + "/"))


class CaptureFastPath:
    """ASGI middleware: ``GET``/``POST`` on the capture routes go straight to :func:`capture`.

    The same handler and the same response as through the router, minus the per-request cost of
    Starlette's exception wrappers and route matching, which at tens of thousands of events a
    second is a measurable share of the event loop's time. It sits inside
    :class:`sightline.web.http.CORSMiddleware` (preflights and CORS headers unchanged) and inside
    Starlette's error middleware (an unexpected exception is still a 500). Every other method
    and path (``HEAD``, ``OPTIONS``, 405s) takes the router as before.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # SIGHTLINE_CAPTURE_FAST_PATH=0 routes capture like every other path (the tests compare both)
        self.enabled = os.environ.get("SIGHTLINE_CAPTURE_FAST_PATH", "1").strip() != "0"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.enabled and scope["type"] == "http" and scope["path"] in CAPTURE_ROUTE_PATHS
                and scope["method"] in ("POST", "GET")):
            response = await capture(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
