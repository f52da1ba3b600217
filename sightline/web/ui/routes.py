"""The web app's HTTP doors: sign-in API, static assets, and the single-page app's HTML.

``api_routes()`` go with the JSON API; ``page_routes()`` go last (``/``, ``/static``, and the SPA
fallback that answers every UI path with ``index.html``).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import mimetypes
import threading
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from sightline.errors import AuthenticationFailed, InvalidInput, PermissionDenied, SightlineError
from sightline.web.http import error_response, json_response, read_json_object
from sightline.web.ui import auth, definitions, insights

log = logging.getLogger("sightline.web.ui")
STATIC_DIR = Path(__file__).resolve().parent / "static"
BODY_LIMIT = 64 * 1024


# -- auth API -----------------------------------------------------------------------------------
def _user_json(session: auth.Session) -> dict:
    return {"id": session.user_id, "email": session.email, "role": session.role}


async def me(request: Request) -> Response:
    """Who is signed in, the CSRF token of the session, and whether the first-run setup is due."""
    meta = request.app.state.core.meta
    session = auth.session_from_request(request)
    needs_setup = meta.count_users() == 0
    return json_response({
        "user": _user_json(session) if session else None,
        "csrf_token": session.csrf_token if session else None,
        "needs_setup": needs_setup,
        "setup_needs_code": needs_setup and not auth.is_loopback_client(request),
    }, headers={"Cache-Control": "no-store"})


def _signed_in(request: Request, user_id: int, email: str, role: str, status: int = 200) -> Response:
    token, csrf = auth.open_session(request.app.state.core.meta, user_id)
    response = json_response({"user": {"id": user_id, "email": email, "role": role}, "csrf_token": csrf},
                             status=status, headers={"Cache-Control": "no-store"})
    auth.set_session_cookie(response, request, token)
    return response


def _require_own_origin(request: Request) -> None:
    if not auth._own_origin(request):
        raise PermissionDenied("Sign in from Sightline's own pages.", code="cross_origin")


async def login(request: Request) -> Response:
    limiter: auth.LoginLimiter = request.app.state.login_limiter
    key = auth.client_key(request)
    try:
        _require_own_origin(request)
        wait = limiter.retry_after(key)
        if wait > 0:
            response = error_response(auth.TooManyAttempts(
                f"Too many failed sign-ins from your address; try again in {int(wait) + 1} s."))
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        payload = await read_json_object(request, BODY_LIMIT)
        email, password = payload.get("email"), payload.get("password")
        if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
            raise InvalidInput("Send {\"email\": ..., \"password\": ...}.", attr="email" if not email else "password")
        meta = request.app.state.core.meta
        user = meta.user_by_email(email.strip())
        stored = user["password_hash"] if user else _DUMMY_HASH  # same work for unknown emails
        ok = await run_in_threadpool(auth.verify_password, password, stored)
        if not ok or user is None:
            limiter.failed(key)
            raise AuthenticationFailed("Wrong email or password.", code="invalid_credentials")
        limiter.succeeded(key)
    except SightlineError as exc:
        return error_response(exc)
    return _signed_in(request, user["id"], user["email"], user["role"])


_DUMMY_HASH = auth.hash_password("not a real password, for timing only")


async def logout(request: Request) -> Response:
    try:
        session = auth.check_session(request)
    except SightlineError as exc:
        return error_response(exc)
    if session is not None:
        request.app.state.core.meta.delete_session(session.token_hash)
    response = json_response({"ok": True})
    auth.clear_session_cookie(response, request)
    return response


async def setup(request: Request) -> Response:
    """First run: create the owner account (loopback client, or the setup code from the log)."""
    meta = request.app.state.core.meta
    try:
        _require_own_origin(request)
        payload = await read_json_object(request, BODY_LIMIT)
        if meta.count_users() > 0:
            raise PermissionDenied("Sightline is already set up; sign in instead.", code="already_set_up")
        code = request.app.state.setup_code
        if not auth.is_loopback_client(request):
            sent = payload.get("setup_code")
            if not isinstance(sent, str) or not code or not auth.hmac.compare_digest(sent.strip(), code):
                raise PermissionDenied("Creating the first account from another machine needs the setup "
                                       "code that `sightline serve` printed when it started.",
                                       code="setup_code_required", attr="setup_code")
        user_id = await run_in_threadpool(auth.create_user, meta, payload.get("email"),
                                          payload.get("password"), "owner")
        request.app.state.setup_code = None
    except SightlineError as exc:
        return error_response(exc)
    log.warning("first-run setup: created the owner account %s", payload.get("email"))
    return _signed_in(request, user_id, payload["email"], "owner", status=201)


# -- static assets ------------------------------------------------------------------------------
@dataclass
class Asset:
    body: bytes
    gzipped: bytes | None
    etag: str
    media_type: str


class AssetCache:
    """Files read and gzip-compressed once, then served from memory with an ETag."""

    def __init__(self) -> None:
        self._assets: dict[tuple[Path, int], Asset] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> Asset:
        key = (path, path.stat().st_mtime_ns)  # an edited file is read again
        asset = self._assets.get(key)
        if asset is not None:
            return asset
        with self._lock:
            asset = self._assets.get(key)
            if asset is None:
                body = path.read_bytes()
                media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if path.suffix in (".js", ".mjs"):
                    media = "text/javascript"
                if media.startswith("text/") or media in ("application/json", "image/svg+xml"):
                    media += "; charset=utf-8"
                compressible = len(body) > 1024 and not path.suffix in (".png", ".jpg", ".woff2", ".gz")
                gz = gzip.compress(body, compresslevel=6, mtime=0) if compressible else None
                asset = Asset(body, gz, '"' + hashlib.sha1(body).hexdigest()[:20] + '"', media)
                self._assets[key] = asset
        return asset


def plotly_path() -> Path | None:
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.exists() else None


def _serve(request: Request, path: Path, cache_control: str) -> Response:
    asset: Asset = request.app.state.assets.get(path)
    headers = {"ETag": asset.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _not_found(request: Request) -> Response:
    return json_response({"type": "invalid_request", "code": "not_found",
                          "detail": f"No endpoint at {request.url.path}.", "attr": None}, status=404)


async def static(request: Request) -> Response:
    rel = request.path_params["path"]
    if rel == "vendor/plotly.min.js":
        path = plotly_path()
        if path is None:
            return _not_found(request)
        # the URL carries plotly's version (?v=), so the file can be cached for good
        return await run_in_threadpool(_serve, request, path, "public, max-age=31536000, immutable")
    path = (STATIC_DIR / rel).resolve()
    if STATIC_DIR not in path.parents or not path.is_file():
        return _not_found(request)
    return await run_in_threadpool(_serve, request, path, "no-cache")


# -- the single-page app ----------------------------------------------------------------------
def _index_html() -> bytes:
    try:
        import plotly
        version = plotly.__version__
    except ImportError:
        version = "missing"
    html = (STATIC_DIR / "index.html").read_text()
    return html.replace("__PLOTLY_VERSION__", version).encode()


async def index(request: Request) -> Response:
    if request.url.path == "/" and request.app.state.core.meta.count_users() == 0:
        return RedirectResponse("/setup", status_code=302)
    html = request.app.state.index_html
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
               "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
               "Content-Security-Policy": CSP}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        html = request.app.state.index_html_gz
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


# Plotly needs inline styles and (for some traces) eval-free workers; everything comes from 'self'.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'self'; form-action 'self'")

# paths that are never UI pages (unknown ones there keep their JSON 404)
RESERVED_SEGMENTS = frozenset({"api", "static", "e", "i", "s", "capture", "track", "engage", "batch", "flags",
                               "decide", "array", "_health", "metrics", "query"})


class SpaFallback(BaseRoute):
    """GET/HEAD of any other path by a browser (Accept: text/html) gets ``index.html``; the SPA's
    router draws the page. Everything else does not match, so 404/405 answers stay as they are."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return Match.NONE, {}
        path: str = scope["path"]
        if path.split("/", 2)[1] in RESERVED_SEGMENTS or "." in path.rstrip("/").rsplit("/", 1)[-1]:
            return Match.NONE, {}
        accept = dict(scope["headers"]).get(b"accept", b"")
        if b"text/html" not in accept:
            return Match.NONE, {}
        return Match.FULL, {"endpoint": index}

    def url_path_for(self, name: str, /, **path_params):  # pragma: no cover - not named
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await index(Request(scope, receive))
        await response(scope, receive, send)


def api_routes() -> list[BaseRoute]:
    base = "/api/projects/{project_id}"
    return [
        Route("/api/auth/me", me, methods=["GET"]),
        Route("/api/auth/login", login, methods=["POST"]),
        Route("/api/auth/logout", logout, methods=["POST"]),
        Route("/api/auth/setup", setup, methods=["POST"]),
        Route(base + "/event_definitions/", definitions.event_definitions, methods=["GET"]),
        Route(base + "/property_definitions/", definitions.property_definitions, methods=["GET"]),
        Route(base + "/property_values/", definitions.property_values, methods=["GET"]),
        Route(base + "/insights/", insights.insight_collection, methods=["GET", "POST"]),
        Route(base + "/insights/{insight_id:int}/", insights.insight_item, methods=["GET", "PATCH", "DELETE"]),
        Route(base + "/dashboards/", insights.dashboard_collection, methods=["GET", "POST"]),
        Route(base + "/dashboards/{dashboard_id:int}/", insights.dashboard_item,
              methods=["GET", "PATCH", "DELETE"]),
    ]


def page_routes() -> list[BaseRoute]:
    return [Route("/", index, methods=["GET", "HEAD"]),
            Route("/static/{path:path}", static, methods=["GET", "HEAD"]),
            SpaFallback()]


def install(app) -> None:
    """Set the web app's state on ``app``; prints nothing (``sightline serve`` shows the setup code)."""
    core = app.state.core
    app.state.assets = AssetCache()
    app.state.login_limiter = auth.LoginLimiter()
    app.state.setup_code = auth.new_setup_code() if core.meta.count_users() == 0 else None
    app.state.index_html = _index_html()
    app.state.index_html_gz = gzip.compress(app.state.index_html, mtime=0)
    insights.ensure_default_dashboard(core)
