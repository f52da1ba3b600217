"""The control channel: CLI commands reach the running server of the same data directory.

DuckDB lets one process write a database file, so while ``sightline serve`` runs, commands
that need the event store (``persons delete``, ``backup``, ``prune``, ``experiments results``...)
ask the server to do the work instead of opening the files themselves.

At start-up ``serve`` writes ``<data>/run/server.json`` (pid, URL) and ``<data>/run/control-token``
(a random secret, file mode 0600) and removes both when it stops. The server accepts that
secret like a secret API key. Whoever can read the data directory owns the data anyway, so
the file's permissions are the authentication (as with a Unix socket).

Commands use :func:`open_or_connect`::

    target = open_or_connect(data_dir)
    if isinstance(target, ServerHandle):
        result = target.request("DELETE", f"/api/projects/@current/persons/{pid}/",
                                params={"delete_events": "true"})
    else:
        with target as core:
            result = ...  # call the core directly
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sightline.errors import SightlineError

RUN_DIR = "run"
SERVER_FILE = "server.json"
TOKEN_FILE = "control-token"


class ServerError(SightlineError):
    """The running server answered a control request with an error."""

    status = 502
    code = "server_error"



def _run_dir(data_dir: Path) -> Path:
    return Path(data_dir) / RUN_DIR


def announce(data_dir: Path, url: str) -> str:
    """Called by ``serve``: record this process as the data directory's server; returns the
    control token the server must accept."""
    run = _run_dir(data_dir)
    run.mkdir(parents=True, exist_ok=True)
    token = "phx_control_" + secrets.token_urlsafe(32)
    token_path = run / TOKEN_FILE
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    os.chmod(token_path, 0o600)
    info = {"pid": os.getpid(), "url": url, "started_at": time.time()}
    tmp = run / (SERVER_FILE + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, run / SERVER_FILE)
    return token


def retire(data_dir: Path) -> None:
    """Called by ``serve`` on shutdown (only removes the files if they are this process's)."""
    run = _run_dir(data_dir)
    try:
        info = json.loads((run / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return
    if info.get("pid") != os.getpid():
        return
    for name in (SERVER_FILE, TOKEN_FILE):
        try:
            (run / name).unlink()
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ServerHandle:
    """A running server of this data directory, reached over HTTP with the control token."""

    url: str
    token: str
    pid: int

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                timeout: float = 600.0) -> Any:
        """Send one request; returns the decoded JSON answer, raises :class:`ServerError`."""
        url = self.url.rstrip("/") + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                err = json.loads(body)
                detail, code = err.get("detail") or str(err), err.get("code") or "server_error"
            except ValueError:
                detail, code = body.decode(errors="replace")[:500] or str(exc), "server_error"
            raise ServerError(detail, status=exc.code, code=code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServerError(f"Could not reach the running server at {self.url}: {exc}") from None
        return json.loads(body) if body else None


def running_server(data_dir: Path, wait_s: float = 10.0) -> ServerHandle | None:
    """The live server of ``data_dir``, or None when no server runs on it."""
    run = _run_dir(data_dir)
    try:
        info = json.loads((run / SERVER_FILE).read_text())
        token = (run / TOKEN_FILE).read_text().strip()
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid") or 0)
    if not pid or not _pid_alive(pid):
        return None  # a stale file from a crashed server
    handle = ServerHandle(info["url"], token, pid)
    deadline = time.monotonic() + wait_s
    while True:  # the server may still be starting
        try:
            handle.request("GET", "/_health", timeout=5)
            return handle
        except ServerError:
            if time.monotonic() > deadline or not _pid_alive(pid):
                return None
            time.sleep(0.2)


def open_or_connect(data_dir: Path, **open_kwargs: Any):
    """The running server's :class:`ServerHandle`, or an opened :class:`~sightline.core.Sightline`
    when no server holds the data directory."""
    handle = running_server(data_dir)
    if handle is not None:
        return handle
    from sightline.core import Sightline

    return Sightline(data_dir, **open_kwargs)
