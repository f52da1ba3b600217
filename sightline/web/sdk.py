"""What the SDKs fetch besides capture: remote config (`/array/<token>/config[.js]`) and flags.

Feature flags are evaluated by :mod:`sightline.flags`; `/flags` and `/decide` answer in the shape
each SDK version expects (spec §4).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sightline.errors import AuthenticationFailed, InvalidInput, NotFound, SightlineError
from sightline.flags.service import parse_flags_request
from sightline.ingest.decode import decode_body
from sightline.web.http import error_response, json_response, read_body


def remote_config(token: str, *, has_feature_flags: bool) -> dict:
    """The config posthog-js reads at boot: gzip capture to /i/v0/e/, nothing we do not serve."""
    return {
        "token": token,
        "supportedCompression": ["gzip", "gzip-js"],
        "hasFeatureFlags": has_feature_flags,
        "autocapture_opt_out": False,
        "capturePerformance": False,
        "autocaptureExceptions": False,
        "errorTracking": {"autocaptureExceptions": False, "suppressionRules": []},
        "analytics": {"endpoint": "/i/v0/e/"},
        "elementsChainAsString": True,
        "sessionRecording": False,
        "heatmaps": False,
        "surveys": False,
        "productTours": False,
        "captureDeadClicks": False,
        "defaultIdentifiedOnly": True,
        "siteApps": [],
        "conversations": False,
        "logs": {"captureConsoleLogs": False},
    }


def _project_for(request: Request, token: str):
    project = request.app.state.core.meta.project_by_token(token)
    if project is None:
        raise NotFound("No project has this token.", code="invalid_token")
    return project


def _has_flags(request: Request, project_id: int) -> bool:
    flags = getattr(request.app.state, "flags", None)
    return bool(flags and flags.has_active_flags(project_id))


async def array_config(request: Request) -> Response:
    try:
        project = _project_for(request, request.path_params["token"])
    except SightlineError as exc:
        return error_response(exc)
    return json_response(remote_config(project.api_token, has_feature_flags=_has_flags(request, project.id)),
                         headers={"Cache-Control": "public, max-age=60"})


async def array_config_js(request: Request) -> Response:
    try:
        project = _project_for(request, request.path_params["token"])
    except SightlineError as exc:
        return error_response(exc)
    config = remote_config(project.api_token, has_feature_flags=_has_flags(request, project.id))
    token_js = orjson.dumps(project.api_token).decode()
    body = ("(function() {\n  window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};\n"
            f"  window._POSTHOG_REMOTE_CONFIG[{token_js}] = {{\n"
            f"    config: {orjson.dumps(config).decode()},\n    siteApps: []\n  }};\n}})();\n")
    return Response(body, media_type="application/javascript",
                    headers={"Cache-Control": "public, max-age=60"})


async def flags(request: Request) -> Response:
    """`/flags` and `/decide`: evaluate the project's flags in the shape each version expects."""
    core = request.app.state.core
    path = request.url.path.rstrip("/")
    query = request.query_params
    if request.method == "HEAD":
        return Response(status_code=200)
    body_json: Any = {}
    if request.method == "POST":
        try:
            body = await read_body(request, core.settings.max_body_bytes)
            if body or query.get("data"):
                body_json = decode_body(body, query=dict(query), content_type=request.headers.get("content-type"),
                                        content_encoding=request.headers.get("content-encoding"),
                                        legacy=False, max_bytes=core.settings.max_decoded_bytes)
        except SightlineError as exc:
            return error_response(exc)
        if not isinstance(body_json, dict):
            return error_response(InvalidInput("The flags request body must be a JSON object.",
                                               code="invalid_payload"))
    token = body_json.get("token") or body_json.get("$token") or body_json.get("api_key") or query.get("token")
    project = core.meta.project_by_token(token) if isinstance(token, str) else None
    if request.method == "POST" and project is None:
        return error_response(AuthenticationFailed("Project token is not valid.", code="invalid_token"))
    try:
        version = int(query.get("v", "0") or 0)
    except ValueError:
        version = 0
    out: dict = {"requestId": str(uuid.uuid4()), "errorsWhileComputingFlags": False}
    is_decide = path.startswith("/decide")
    if is_decide:
        shape = {0: "decide_v1", 1: "decide_v1", 2: "decide_v2", 3: "flags_v1"}.get(version, "flags_v2")
        with_config = True
    else:
        shape = "flags_v2" if version >= 2 or ("v" not in query and "config" not in query) else "flags_v1"
        cfg = query.get("config")
        with_config = ("v" not in query and cfg is None) or (
            cfg is not None and cfg.lower() not in ("0", "false", "no", "off"))
    results: dict = {}
    started = time.perf_counter()
    if request.method == "POST" and project is not None:
        try:
            req = parse_flags_request(body_json)
            results, errors = core.flags.evaluate(project.id, req)
            core.metrics.flag_evaluations(len(results))
        except SightlineError as exc:
            return error_response(exc)
        out["errorsWhileComputingFlags"] = errors
    elapsed_ms = (time.perf_counter() - started) * 1000
    if shape == "decide_v1":
        out["featureFlags"] = [k for k, r in results.items() if r.enabled]
    elif shape == "decide_v2":
        out["featureFlags"] = {k: r.value for k, r in results.items() if r.enabled}
    elif shape == "flags_v1":
        out["featureFlags"] = {k: r.value for k, r in results.items()}
        out["featureFlagPayloads"] = {k: r.payload for k, r in results.items()
                                      if r.enabled and r.payload is not None}
    else:
        out["flags"] = {k: r.detail() for k, r in results.items()}
    if with_config and project is not None:
        config = remote_config(project.api_token, has_feature_flags=_has_flags(request, project.id))
        config.pop("token")
        out.update(config)
    # how long evaluation took (person lookup + every flag), for benchmarks and browser devtools
    return json_response(out, headers={"Server-Timing": f"flags;dur={elapsed_ms:.3f}"})
