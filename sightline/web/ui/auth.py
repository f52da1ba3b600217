"""Accounts and sessions of the web app: password hashing, session cookies, CSRF, sign-in.

* Passwords are hashed with scrypt (``hashlib.scrypt``, n=2^14, r=8, p=1, a 16-byte salt).
* A session is a random token in the ``sightline_session`` cookie (HttpOnly, SameSite=Lax, Secure
  over https); the metadata store keeps only its SHA-256 and expiry, plus a per-session CSRF token
  that every POST/PATCH/DELETE made with the cookie must echo in the ``X-CSRF-Token`` header.
* Cookies only authorize requests from Sightline's own pages: a request whose ``Origin`` is another
  origin, or that the browser marks ``Sec-Fetch-Site: cross-site``/``same-site``, is not signed in
  (the capture CORS policy mirrors any origin with credentials, so this matters).
* First run: while no user exists, the owner account can be created from a loopback client, or from
  anywhere with the one-time setup code that ``sightline serve`` prints at start-up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from starlette.requests import Request

from sightline.errors import AuthenticationFailed, InvalidInput, PermissionDenied, SightlineError

COOKIE = "sightline_session"
CSRF_HEADER = "x-csrf-token"
SESSION_DAYS = 14
ROLES = ("owner", "admin", "member")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
MIN_PASSWORD = 8


# -- passwords ----------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def validate_credentials(email: object, password: object) -> tuple[str, str]:
    if not isinstance(email, str) or "@" not in email or len(email) > 254 or email != email.strip():
        raise InvalidInput("Give a valid email address.", attr="email")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"The password needs at least {MIN_PASSWORD} characters.", attr="password")
    if len(password) > 1024:
        raise InvalidInput("The password is too long (1024 characters at most).", attr="password")
    return email, password


def create_user(meta, email: str, password: str, role: str = "member") -> int:
    """Create an account (the CLI and the first-run page both come here)."""
    email, password = validate_credentials(email, password)
    if role not in ROLES:
        raise InvalidInput(f"role is one of {', '.join(ROLES)}.", attr="role")
    if meta.user_by_email(email) is not None:
        raise InvalidInput(f"A user with the email {email} already exists.", code="user_exists",
                           attr="email")
    return meta.create_user(email, hash_password(password), role)


# -- sessions -----------------------------------------------------------------------------------
def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    user_id: int
    email: str
    role: str
    csrf_token: str
    token_hash: str


def open_session(meta, user_id: int) -> tuple[str, str]:
    """A new session for ``user_id``: (cookie token, CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    expires = (datetime.now(timezone.utc) + timedelta(days=SESSION_DAYS)).isoformat()
    meta.create_session(_token_hash(token), user_id, csrf, expires)
    return token, csrf


def _own_origin(request: Request) -> bool:
    """True unless the browser tells us the request comes from another site or origin."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host
    return origin != "null"


def session_from_request(request: Request) -> Session | None:
    """The signed-in session of this request (cookie, own origin), or None."""
    token = request.cookies.get(COOKIE)
    if not token or not _own_origin(request):
        return None
    cached = request.scope.get("sightline.session", False)
    if cached is not False:
        return cached
    row = request.app.state.core.meta.session(_token_hash(token))
    session = (Session(row["user_id"], row["email"], row["role"], row["csrf_token"], _token_hash(token))
               if row else None)
    request.scope["sightline.session"] = session
    return session


def check_session(request: Request) -> Session | None:
    """The session authorizing this request (CSRF checked for unsafe methods), or None.

    Raises 403 when a signed-in browser sends a POST/PATCH/DELETE without the right CSRF header.
    """
    session = session_from_request(request)
    if session is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, session.csrf_token):
            raise PermissionDenied("This request needs the X-CSRF-Token header of your session.",
                                   code="csrf_failed")
    return session


def is_https(request: Request) -> bool:
    return (request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https")


def set_session_cookie(response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=SESSION_DAYS * 86400, path="/", httponly=True,
                        samesite="lax", secure=is_https(request))


def clear_session_cookie(response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=is_https(request))


# -- first run ------------------------------------------------------------------------------------
def is_loopback_client(request: Request) -> bool:
    """A direct connection from this machine (not through a proxy that forwards for others)."""
    if request.headers.get("x-forwarded-for") or request.headers.get("forwarded"):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def new_setup_code() -> str:
    return "-".join(secrets.token_hex(3) for _ in range(3))


# -- sign-in rate limiting ---------------------------------------------------------------------
@dataclass
class LoginLimiter:
    """Per client address: after ``free`` failed sign-ins, wait 2^k seconds (capped) before the next."""

    free: int = 5
    cap_s: float = 300.0
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            count, last = self._failures.get(key, (0, 0.0))
        if count < self.free:
            return 0.0
        wait = min(self.cap_s, 2.0 ** (count - self.free + 1))
        return max(0.0, last + wait - now)

    def failed(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            count, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (count + 1, now)
            if len(self._failures) > 10_000:  # forget the oldest
                for k in sorted(self._failures, key=lambda k: self._failures[k][1])[:5_000]:
                    del self._failures[k]

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class TooManyAttempts(SightlineError):
    status = 429
    type = "throttled"
    code = "too_many_attempts"


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


__all__ = ["AuthenticationFailed", "COOKIE", "CSRF_HEADER", "LoginLimiter", "Session", "TooManyAttempts",
           "check_session", "clear_session_cookie", "create_user", "hash_password", "is_loopback_client",
           "new_setup_code", "open_session", "session_from_request", "set_session_cookie",
           "verify_password"]
