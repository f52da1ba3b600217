"""Small HTTP helpers shared by every route: JSON responses, errors, CORS, body limits, auth."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sightline.errors import AuthenticationFailed, PayloadTooLarge, SightlineError


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status_code=status,
                    media_type="application/json", headers=headers)


def error_response(exc: SightlineError) -> Response:
    headers = {"Retry-After": "2"} if exc.status == 503 else None
    return json_response(exc.to_json(), status=exc.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, refusing (413) anything over ``limit`` bytes before reading it all."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"Request body is {int(length)} bytes; the limit is {limit}.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int) -> dict:
    """The request body as a JSON object (an empty body is ``{}``), or a 400 that says why."""
    import orjson

    from sightline.errors import InvalidInput

    body = await read_body(request, limit)
    try:
        payload = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"The body is not JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise InvalidInput("The body must be a JSON object.", code="invalid_json")
    return payload


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        value = header[7:].strip()
        return value or None
    return None


def require_api_key(request: Request) -> None:
    """Every read or configuration endpoint needs a secret personal API key, or the web app's
    session cookie (with its CSRF header on POST/PATCH/DELETE; see ``sightline.web.ui.auth``)."""
    token = bearer_token(request)
    if token is None:
        from sightline.web.ui.auth import check_session

        if check_session(request) is not None:
            return
        raise AuthenticationFailed(
            "This endpoint needs a secret API key: send `Authorization: Bearer <key>`. "
            "Project tokens can only send events.", code="not_authenticated")
    control = getattr(request.app.state, "control_token", None)
    if control is not None and hmac.compare_digest(token, control):
        return  # the CLI of this data directory (sightline.ops.control)
    core = request.app.state.core
    if not core.meta.check_api_key(token):
        if core.meta.project_by_token(token) is not None:
            raise AuthenticationFailed(
                "A project token can only send events; this endpoint needs a secret API key.",
                code="project_token_not_allowed")
        raise AuthenticationFailed("Invalid API key.", code="invalid_api_key")


class CORSMiddleware:
    """CORS as PostHog's server does it: mirror the Origin and requested headers, allow credentials.

    Preflights (OPTIONS) are answered here for every path: 200 with a JSON status on capture
    paths, 204 elsewhere.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        cors: list[tuple[bytes, bytes]] = []
        if origin:
            cors = [(b"access-control-allow-origin", origin),
                    (b"access-control-allow-credentials", b"true"),
                    (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS":
            requested = headers.get(b"access-control-request-headers", b"*")
            extra = cors + [(b"access-control-allow-methods", b"GET, POST, OPTIONS, HEAD"),
                            (b"access-control-allow-headers", requested),
                            (b"access-control-max-age", b"86400"),
                            (b"allow", b"GET, POST, OPTIONS, HEAD")]
            path = scope["path"].rstrip("/")
            if path in CAPTURE_PATHS:
                body = b'{"status":1}'
                await send({"type": "http.response.start", "status": 200,
                            "headers": extra + [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            else:
                await send({"type": "http.response.start", "status": 204, "headers": extra})
                await send({"type": "http.response.body", "body": b""})
            return
        if not cors:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + cors
            await send(message)

        await self.app(scope, receive, send_with_cors)


CAPTURE_PATHS = frozenset({"/e", "/i/v0/e", "/capture", "/track", "/engage", "/batch", "/s",
                           "/i/v1/analytics/events"})
