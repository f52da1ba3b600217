"""Errors that carry an HTTP status and a PostHog-shaped JSON body.

Every layer raises these; only the web layer turns them into responses, and the
CLI turns them into a message and a non-zero exit.
"""

from __future__ import annotations


class SightlineError(Exception):
    """Base error: ``status`` is the HTTP status, ``code`` a stable machine code."""

    status: int = 400
    type: str = "validation_error"
    code: str = "invalid_input"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None,
                 attr: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.attr = attr

    def to_json(self) -> dict:
        return {"type": self.type, "code": self.code, "detail": self.detail, "attr": self.attr}


class InvalidInput(SightlineError):
    status = 400


class AuthenticationFailed(SightlineError):
    status = 401
    type = "authentication_error"
    code = "authentication_failed"


class PermissionDenied(SightlineError):
    status = 403
    type = "authentication_error"
    code = "permission_denied"


class NotFound(SightlineError):
    status = 404
    type = "invalid_request"
    code = "not_found"


class PayloadTooLarge(SightlineError):
    status = 413
    type = "invalid_request"
    code = "payload_too_large"


class Unavailable(SightlineError):
    status = 503
    type = "server_error"
    code = "unavailable"


class DataDirLocked(SightlineError):
    status = 409
    type = "invalid_request"
    code = "data_dir_locked"
