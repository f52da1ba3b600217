"""The metadata store: projects, API keys and settings, in SQLite beside the event store.

Secrets are stored hashed (SHA-256); the plain value is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

UTC = timezone.utc
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS projects (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        api_token TEXT NOT NULL UNIQUE,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        settings TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id INTEGER PRIMARY KEY,
        label TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        mask TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_used_at TEXT
    )""",
]


def new_project_token() -> str:
    return "phc_" + secrets.token_urlsafe(32).replace("-", "a").replace("_", "b")


def new_api_key() -> str:
    return "phx_" + secrets.token_urlsafe(32).replace("-", "a").replace("_", "b")


def hash_key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    api_token: str
    timezone: str
    settings: dict[str, Any]
    created_at: str


class MetaStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._lock = threading.RLock()
        with self._lock:
            for ddl in SCHEMA:
                self._con.execute(ddl)
        self._tokens: dict[str, Project] = {}
        self._reload()

    def _reload(self) -> None:
        with self._lock:
            rows = self._con.execute(
                "SELECT id, name, api_token, timezone, settings, created_at FROM projects").fetchall()
        projects = [Project(r[0], r[1], r[2], r[3], orjson.loads(r[4]), r[5]) for r in rows]
        self._tokens = {p.api_token: p for p in projects}
        self._by_id = {p.id: p for p in projects}

    # -- projects ------------------------------------------------------------------------
    def projects(self) -> list[Project]:
        return sorted(self._by_id.values(), key=lambda p: p.id)

    def project_by_token(self, token: str) -> Project | None:
        return self._tokens.get(token)

    def project(self, project_id: int) -> Project | None:
        return self._by_id.get(project_id)

    def default_project(self) -> Project | None:
        ps = self.projects()
        return ps[0] if ps else None

    def create_project(self, name: str, token: str | None = None, timezone_name: str = "UTC") -> Project:
        with self._lock:
            cur = self._con.execute(
                "INSERT INTO projects (name, api_token, timezone, created_at) VALUES (?, ?, ?, ?)",
                (name, token or new_project_token(), timezone_name, datetime.now(UTC).isoformat()))
            pid = cur.lastrowid
        self._reload()
        return self._by_id[pid]

    def set_project_token(self, project_id: int, token: str) -> Project:
        with self._lock:
            self._con.execute("UPDATE projects SET api_token = ? WHERE id = ?", (token, project_id))
        self._reload()
        return self._by_id[project_id]

    def update_project(self, project_id: int, *, name: str | None = None, timezone_name: str | None = None,
                       settings: dict[str, Any] | None = None) -> Project:
        """Change a project's name, time zone or settings (settings are merged key by key)."""
        current = self._by_id[project_id]
        merged = {**current.settings, **(settings or {})}
        with self._lock:
            self._con.execute("UPDATE projects SET name = ?, timezone = ?, settings = ? WHERE id = ?",
                              (name or current.name, timezone_name or current.timezone,
                               orjson.dumps(merged).decode(), project_id))
        self._reload()
        return self._by_id[project_id]

    # -- API keys ------------------------------------------------------------------------
    def create_api_key(self, label: str, value: str | None = None) -> str:
        value = value or new_api_key()
        with self._lock:
            self._con.execute(
                "INSERT OR IGNORE INTO api_keys (label, key_hash, mask, created_at) VALUES (?, ?, ?, ?)",
                (label, hash_key(value), value[:8] + "…", datetime.now(UTC).isoformat()))
        return value

    def has_api_keys(self) -> bool:
        with self._lock:
            return self._con.execute("SELECT count(*) FROM api_keys").fetchone()[0] > 0

    def check_api_key(self, value: str) -> bool:
        with self._lock:
            row = self._con.execute("SELECT id FROM api_keys WHERE key_hash = ?",
                                    (hash_key(value),)).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._con.close()
