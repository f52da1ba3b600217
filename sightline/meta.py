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
    # -- feature flags (sightline.flags): definitions are JSON documents, versioned and audited
    """CREATE TABLE IF NOT EXISTS feature_flags (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 1,
        data TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT,
        updated_at TEXT NOT NULL,
        updated_by TEXT
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS feature_flags_live_key ON feature_flags (project_id, key) "
    "WHERE deleted = 0",
    """CREATE TABLE IF NOT EXISTS feature_flag_activity (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        flag_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        action TEXT NOT NULL,
        actor TEXT,
        at TEXT NOT NULL,
        before TEXT,
        after TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS feature_flag_activity_flag ON feature_flag_activity (flag_id, id)",
    """CREATE TABLE IF NOT EXISTS cohorts (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        filters TEXT NOT NULL DEFAULT '{}',
        is_static INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS cohort_static_members (
        cohort_id INTEGER NOT NULL,
        distinct_id TEXT NOT NULL,
        PRIMARY KEY (cohort_id, distinct_id)
    )""",
    """CREATE TABLE IF NOT EXISTS flag_hash_key_overrides (
        project_id INTEGER NOT NULL,
        distinct_id TEXT NOT NULL,
        flag_key TEXT NOT NULL,
        hash_key TEXT NOT NULL,
        PRIMARY KEY (project_id, distinct_id, flag_key)
    )""",
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )""",
    # -- the web app (sightline.web.ui): accounts, sessions, saved insights and dashboards
    """CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'member',
        created_at TEXT NOT NULL,
        last_login_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        csrf_token TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS insights (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        short_id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        query TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        created_by TEXT,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dashboards (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        filters TEXT NOT NULL DEFAULT '{}',
        pinned INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        created_by TEXT,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dashboard_tiles (
        id INTEGER PRIMARY KEY,
        dashboard_id INTEGER NOT NULL,
        insight_id INTEGER NOT NULL,
        position INTEGER NOT NULL DEFAULT 0,
        UNIQUE (dashboard_id, insight_id)
    )""",
    # -- experiments (sightline.experiments): definitions are JSON documents, versioned and audited
    """CREATE TABLE IF NOT EXISTS experiments (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        feature_flag_key TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'draft',
        deleted INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 1,
        data TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT,
        updated_at TEXT NOT NULL,
        updated_by TEXT
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS experiments_live_flag ON experiments (project_id, feature_flag_key) "
    "WHERE deleted = 0",
    """CREATE TABLE IF NOT EXISTS experiment_activity (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        experiment_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        action TEXT NOT NULL,
        actor TEXT,
        at TEXT NOT NULL,
        before TEXT,
        after TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS experiment_activity_exp ON experiment_activity (experiment_id, id)",
    # -- the audit trail of data-protection operations (sightline.persons.admin): append-only,
    # no personal data (the person is a salted hash)
    """CREATE TABLE IF NOT EXISTS audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        project_id INTEGER NOT NULL,
        subject_hash TEXT,
        details TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS audit_salt (salt TEXT NOT NULL)""",
]


def _log_activity(con, table: str, key_column: str, project_id: int, item_id: int, version: int, action: str,
                  actor: str | None, at: str, before: Any, after: dict) -> None:
    """Append one change to a flag's or experiment's history (inside the caller's transaction)."""
    con.execute(f"INSERT INTO {table} (project_id, {key_column}, version, action, actor, at, before, after) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (project_id, item_id, version, action, actor, at, orjson.dumps(before).decode(),
                 orjson.dumps({**after, "version": version}).decode()))


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
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._con = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._lock = threading.RLock()
        with self._lock:
            for ddl in SCHEMA:
                self._con.execute(ddl)
            if new:  # a new store starts at the current schema version (sightline.ops.migrations)
                from sightline.ops.migrations import stamp_meta

                stamp_meta(self._con)
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

    def api_key_label(self, value: str) -> str | None:
        with self._lock:
            row = self._con.execute("SELECT label, mask FROM api_keys WHERE key_hash = ?",
                                    (hash_key(value),)).fetchone()
        return f"{row[0]} ({row[1]})" if row else None

    # -- feature flags and cohorts (owned by sightline.flags) ------------------------------
    def _bump_flags_version(self) -> None:
        self._con.execute("INSERT INTO counters (name, value) VALUES ('flags', 1) "
                          "ON CONFLICT (name) DO UPDATE SET value = value + 1")

    def flags_version(self) -> int:
        """A counter bumped by every flag or cohort change, by any process (cheap to poll)."""
        with self._lock:
            row = self._con.execute("SELECT value FROM counters WHERE name = 'flags'").fetchone()
        return row[0] if row else 0

    def _transaction(self):
        meta = self

        class _Tx:
            def __enter__(self_inner):
                meta._lock.acquire()
                meta._con.execute("BEGIN IMMEDIATE")
                return meta._con

            def __exit__(self_inner, exc_type, *rest):
                try:
                    meta._con.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    meta._lock.release()
                return False

        return _Tx()

    _FLAG_COLUMNS = "id, project_id, key, deleted, version, data, created_at, created_by, updated_at, updated_by"

    @staticmethod
    def _flag_row(r: tuple) -> dict[str, Any]:
        return {"id": r[0], "project_id": r[1], "key": r[2], "deleted": bool(r[3]), "version": r[4],
                "data": orjson.loads(r[5]), "created_at": r[6], "created_by": r[7],
                "updated_at": r[8], "updated_by": r[9]}

    def flag_rows(self, project_id: int | None = None, include_deleted: bool = False) -> list[dict[str, Any]]:
        sql = f"SELECT {self._FLAG_COLUMNS} FROM feature_flags WHERE 1=1"
        args: list[Any] = []
        if project_id is not None:
            sql += " AND project_id = ?"
            args.append(project_id)
        if not include_deleted:
            sql += " AND deleted = 0"
        with self._lock:
            rows = self._con.execute(sql + " ORDER BY id", args).fetchall()
        return [self._flag_row(r) for r in rows]

    def flag_row(self, project_id: int, flag_id: int) -> dict[str, Any] | None:
        with self._lock:
            r = self._con.execute(f"SELECT {self._FLAG_COLUMNS} FROM feature_flags "
                                  "WHERE project_id = ? AND id = ?", (project_id, flag_id)).fetchone()
        return self._flag_row(r) if r else None

    def insert_flag(self, project_id: int, key: str, data: dict, actor: str | None,
                    after: dict) -> int:
        """Store a new flag (version 1) and its 'created' activity in one transaction."""
        now = datetime.now(UTC).isoformat()
        with self._transaction() as con:
            cur = con.execute(
                "INSERT INTO feature_flags (project_id, key, deleted, version, data, created_at, "
                "created_by, updated_at, updated_by) VALUES (?, ?, 0, 1, ?, ?, ?, ?, ?)",
                (project_id, key, orjson.dumps(data).decode(), now, actor, now, actor))
            flag_id = cur.lastrowid
            after = {**after, "id": flag_id}
            con.execute("INSERT INTO feature_flag_activity (project_id, flag_id, version, action, actor, "
                        "at, before, after) VALUES (?, ?, 1, 'created', ?, ?, NULL, ?)",
                        (project_id, flag_id, actor, now, orjson.dumps(after).decode()))
            self._bump_flags_version()
        return flag_id

    def update_flag(self, project_id: int, flag_id: int, *, key: str, data: dict, deleted: bool,
                    expected_version: int, action: str, actor: str | None, before: dict,
                    after: dict) -> int:
        """Write a new version of a flag if nobody changed it meanwhile; returns the new version
        (0 if ``expected_version`` is stale)."""
        now = datetime.now(UTC).isoformat()
        with self._transaction() as con:
            cur = con.execute(
                "UPDATE feature_flags SET key = ?, data = ?, deleted = ?, version = version + 1, "
                "updated_at = ?, updated_by = ? WHERE project_id = ? AND id = ? AND version = ?",
                (key, orjson.dumps(data).decode(), int(deleted), now, actor, project_id, flag_id,
                 expected_version))
            if cur.rowcount != 1:
                return 0
            version = expected_version + 1
            _log_activity(con, "feature_flag_activity", "flag_id", project_id, flag_id, version, action, actor,
                          now, before, after)
            self._bump_flags_version()
        return version

    def _activity(self, table: str, key_column: str, project_id: int, item_id: int) -> list[dict[str, Any]]:
        """The change history of one flag or experiment, newest first (``table``/``key_column`` are
        this module's own names, never user input)."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT id, version, action, actor, at, before, after FROM {table} "
                f"WHERE project_id = ? AND {key_column} = ? ORDER BY id DESC", (project_id, item_id)).fetchall()
        return [{"id": r[0], "version": r[1], "action": r[2], "actor": r[3], "at": r[4],
                 "before": orjson.loads(r[5]) if r[5] else None,
                 "after": orjson.loads(r[6]) if r[6] else None} for r in rows]

    def flag_activity(self, project_id: int, flag_id: int) -> list[dict[str, Any]]:
        return self._activity("feature_flag_activity", "flag_id", project_id, flag_id)

    def cohort_rows(self, project_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, project_id, name, filters, is_static, deleted, created_at, updated_at FROM cohorts"
        args: tuple = ()
        if project_id is not None:
            sql += " WHERE project_id = ?"
            args = (project_id,)
        with self._lock:
            rows = self._con.execute(sql + " ORDER BY id", args).fetchall()
        return [{"id": r[0], "project_id": r[1], "name": r[2], "filters": orjson.loads(r[3]),
                 "is_static": bool(r[4]), "deleted": bool(r[5]), "created_at": r[6],
                 "updated_at": r[7]} for r in rows]

    def create_cohort(self, project_id: int, name: str, filters: dict | None = None, *,
                      is_static: bool = False, members: list[str] | None = None) -> int:
        now = datetime.now(UTC).isoformat()
        with self._transaction() as con:
            cur = con.execute("INSERT INTO cohorts (project_id, name, filters, is_static, created_at, "
                              "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                              (project_id, name, orjson.dumps(filters or {}).decode(), int(is_static),
                               now, now))
            cid = cur.lastrowid
            con.executemany("INSERT OR IGNORE INTO cohort_static_members (cohort_id, distinct_id) "
                            "VALUES (?, ?)", [(cid, d) for d in (members or [])])
            self._bump_flags_version()
        return cid

    def update_cohort(self, cohort_id: int, *, name: str | None = None, filters: dict | None = None,
                      deleted: bool | None = None, add_members: list[str] | None = None,
                      remove_members: list[str] | None = None) -> None:
        now = datetime.now(UTC).isoformat()
        with self._transaction() as con:
            if name is not None:
                con.execute("UPDATE cohorts SET name = ? WHERE id = ?", (name, cohort_id))
            if filters is not None:
                con.execute("UPDATE cohorts SET filters = ? WHERE id = ?",
                            (orjson.dumps(filters).decode(), cohort_id))
            if deleted is not None:
                con.execute("UPDATE cohorts SET deleted = ? WHERE id = ?", (int(deleted), cohort_id))
            con.executemany("INSERT OR IGNORE INTO cohort_static_members (cohort_id, distinct_id) "
                            "VALUES (?, ?)", [(cohort_id, d) for d in (add_members or [])])
            con.executemany("DELETE FROM cohort_static_members WHERE cohort_id = ? AND distinct_id = ?",
                            [(cohort_id, d) for d in (remove_members or [])])
            con.execute("UPDATE cohorts SET updated_at = ? WHERE id = ?", (now, cohort_id))
            self._bump_flags_version()

    def static_cohort_members(self, project_id: int) -> dict[str, set[int]]:
        """distinct id → the static cohorts of ``project_id`` it belongs to."""
        with self._lock:
            rows = self._con.execute(
                "SELECT m.distinct_id, m.cohort_id FROM cohort_static_members m JOIN cohorts c "
                "ON c.id = m.cohort_id WHERE c.project_id = ? AND c.deleted = 0", (project_id,)).fetchall()
        out: dict[str, set[int]] = {}
        for did, cid in rows:
            out.setdefault(did, set()).add(cid)
        return out

    def hash_key_overrides(self, project_id: int, distinct_ids: list[str]) -> dict[str, str]:
        """flag key → hash key stored for any of ``distinct_ids`` (experience continuity)."""
        if not distinct_ids:
            return {}
        marks = ",".join("?" * len(distinct_ids))
        with self._lock:
            rows = self._con.execute(
                f"SELECT flag_key, hash_key FROM flag_hash_key_overrides WHERE project_id = ? "
                f"AND distinct_id IN ({marks}) ORDER BY rowid", (project_id, *distinct_ids)).fetchall()
        out: dict[str, str] = {}
        for flag_key, hash_key_ in rows:
            out.setdefault(flag_key, hash_key_)
        return out

    def set_hash_key_overrides(self, project_id: int, distinct_ids: list[str],
                               overrides: dict[str, str]) -> None:
        """Remember ``overrides`` for each distinct id; existing overrides are kept."""
        with self._transaction() as con:
            con.executemany(
                "INSERT OR IGNORE INTO flag_hash_key_overrides (project_id, distinct_id, flag_key, "
                "hash_key) VALUES (?, ?, ?, ?)",
                [(project_id, d, k, v) for d in distinct_ids for k, v in overrides.items()])

    # -- the web app: users, sessions, insights, dashboards (owned by sightline.web.ui) -------
    def create_user(self, email: str, password_hash: str, role: str = "member") -> int:
        with self._lock:
            cur = self._con.execute("INSERT INTO users (email, password_hash, role, created_at) "
                                    "VALUES (?, ?, ?, ?)",
                                    (email, password_hash, role, datetime.now(UTC).isoformat()))
        return cur.lastrowid

    def count_users(self) -> int:
        with self._lock:
            return self._con.execute("SELECT count(*) FROM users").fetchone()[0]

    def user_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._con.execute("SELECT id, email, role, created_at, last_login_at FROM users "
                                     "ORDER BY id").fetchall()
        return [{"id": r[0], "email": r[1], "role": r[2], "created_at": r[3], "last_login_at": r[4]}
                for r in rows]

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._con.execute("SELECT id, email, role, password_hash FROM users WHERE email = ?",
                                  (email,)).fetchone()
        return {"id": r[0], "email": r[1], "role": r[2], "password_hash": r[3]} if r else None

    def set_user_password(self, user_id: int, password_hash: str) -> None:
        with self._lock:
            self._con.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            self._con.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def create_session(self, token_hash: str, user_id: int, csrf_token: str, expires_at: str) -> None:
        now = datetime.now(UTC).isoformat()
        with self._lock:
            self._con.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            self._con.execute("INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, "
                              "expires_at) VALUES (?, ?, ?, ?, ?)",
                              (token_hash, user_id, csrf_token, now, expires_at))
            self._con.execute("UPDATE users SET last_login_at = ? WHERE id = ?", (now, user_id))

    def session(self, token_hash: str) -> dict[str, Any] | None:
        """The live session with this token hash and its user, or None (missing or expired)."""
        with self._lock:
            r = self._con.execute(
                "SELECT s.user_id, s.csrf_token, s.expires_at, u.email, u.role FROM sessions s "
                "JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.expires_at > ?",
                (token_hash, datetime.now(UTC).isoformat())).fetchone()
        if r is None:
            return None
        return {"user_id": r[0], "csrf_token": r[1], "expires_at": r[2], "email": r[3], "role": r[4]}

    def delete_session(self, token_hash: str) -> None:
        with self._lock:
            self._con.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    _INSIGHT_COLUMNS = "id, project_id, short_id, name, description, query, created_at, created_by, updated_at"

    def _insight_row(self, r: tuple) -> dict[str, Any]:
        with self._lock:
            dashboards = [d[0] for d in self._con.execute(
                "SELECT t.dashboard_id FROM dashboard_tiles t JOIN dashboards d ON d.id = t.dashboard_id "
                "WHERE t.insight_id = ? AND d.deleted = 0 ORDER BY t.dashboard_id", (r[0],)).fetchall()]
        return {"id": r[0], "project_id": r[1], "short_id": r[2], "name": r[3], "description": r[4],
                "query": orjson.loads(r[5]), "created_at": r[6], "created_by": r[7], "updated_at": r[8],
                "dashboards": dashboards}

    def insight_rows(self, project_id: int, *, search: str | None = None, limit: int = 100,
                     offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        where = "project_id = ? AND deleted = 0"
        args: list[Any] = [project_id]
        if search:
            where += " AND instr(lower(name), lower(?)) > 0"
            args.append(search)
        with self._lock:
            total = self._con.execute(f"SELECT count(*) FROM insights WHERE {where}", args).fetchone()[0]
            rows = self._con.execute(f"SELECT {self._INSIGHT_COLUMNS} FROM insights WHERE {where} "
                                     "ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
                                     [*args, limit, offset]).fetchall()
        return [self._insight_row(r) for r in rows], total

    def insight_row(self, project_id: int, insight_id: int) -> dict[str, Any] | None:
        with self._lock:
            r = self._con.execute(f"SELECT {self._INSIGHT_COLUMNS} FROM insights WHERE project_id = ? "
                                  "AND id = ? AND deleted = 0", (project_id, insight_id)).fetchone()
        return self._insight_row(r) if r else None

    def create_insight(self, project_id: int, name: str, query: dict, *, description: str = "",
                       created_by: str | None = None) -> int:
        now = datetime.now(UTC).isoformat()
        with self._lock:
            cur = self._con.execute(
                "INSERT INTO insights (project_id, short_id, name, description, query, created_at, "
                "created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (project_id, secrets.token_urlsafe(6), name, description, orjson.dumps(query).decode(),
                 now, created_by, now))
        return cur.lastrowid

    def update_insight(self, insight_id: int, *, name: str | None = None, description: str | None = None,
                       query: dict | None = None, deleted: bool | None = None) -> None:
        sets, args = ["updated_at = ?"], [datetime.now(UTC).isoformat()]
        for col, value in (("name", name), ("description", description),
                           ("query", orjson.dumps(query).decode() if query is not None else None),
                           ("deleted", int(deleted) if deleted is not None else None)):
            if value is not None:
                sets.append(f"{col} = ?")
                args.append(value)
        with self._lock:
            self._con.execute(f"UPDATE insights SET {', '.join(sets)} WHERE id = ?", [*args, insight_id])

    def set_insight_dashboards(self, insight_id: int, dashboard_ids: list[int]) -> None:
        """Make ``insight_id`` a tile of exactly these dashboards (new tiles go last)."""
        with self._transaction() as con:
            con.execute("DELETE FROM dashboard_tiles WHERE insight_id = ? AND dashboard_id NOT IN "
                        f"({','.join('?' * len(dashboard_ids)) or 'NULL'})", (insight_id, *dashboard_ids))
            for did in dashboard_ids:
                con.execute("INSERT OR IGNORE INTO dashboard_tiles (dashboard_id, insight_id, position) "
                            "SELECT ?, ?, coalesce(max(position) + 1, 0) FROM dashboard_tiles "
                            "WHERE dashboard_id = ?", (did, insight_id, did))

    _DASHBOARD_COLUMNS = "id, project_id, name, description, filters, pinned, created_at, created_by, updated_at"

    @staticmethod
    def _dashboard_row(r: tuple) -> dict[str, Any]:
        return {"id": r[0], "project_id": r[1], "name": r[2], "description": r[3],
                "filters": orjson.loads(r[4]), "pinned": bool(r[5]), "created_at": r[6],
                "created_by": r[7], "updated_at": r[8]}

    def dashboard_rows(self, project_id: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._con.execute(f"SELECT {self._DASHBOARD_COLUMNS} FROM dashboards WHERE project_id = ? "
                                     "AND deleted = 0 ORDER BY pinned DESC, id", (project_id,)).fetchall()
        return [self._dashboard_row(r) for r in rows]

    def dashboard_row(self, project_id: int, dashboard_id: int) -> dict[str, Any] | None:
        with self._lock:
            r = self._con.execute(f"SELECT {self._DASHBOARD_COLUMNS} FROM dashboards WHERE project_id = ? "
                                  "AND id = ? AND deleted = 0", (project_id, dashboard_id)).fetchone()
        return self._dashboard_row(r) if r else None

    def dashboards_ever_created(self, project_id: int) -> bool:
        """Whether the project has (or had: deleted ones count) any dashboard."""
        with self._lock:
            return self._con.execute("SELECT count(*) FROM dashboards WHERE project_id = ?",
                                     (project_id,)).fetchone()[0] > 0

    def create_dashboard(self, project_id: int, name: str, *, description: str = "",
                         filters: dict | None = None, pinned: bool = False,
                         created_by: str | None = None) -> int:
        now = datetime.now(UTC).isoformat()
        with self._lock:
            cur = self._con.execute(
                "INSERT INTO dashboards (project_id, name, description, filters, pinned, created_at, "
                "created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (project_id, name, description, orjson.dumps(filters or {}).decode(), int(pinned), now,
                 created_by, now))
        return cur.lastrowid

    def update_dashboard(self, dashboard_id: int, *, name: str | None = None, description: str | None = None,
                         filters: dict | None = None, pinned: bool | None = None,
                         deleted: bool | None = None) -> None:
        sets, args = ["updated_at = ?"], [datetime.now(UTC).isoformat()]
        for col, value in (("name", name), ("description", description),
                           ("filters", orjson.dumps(filters).decode() if filters is not None else None),
                           ("pinned", int(pinned) if pinned is not None else None),
                           ("deleted", int(deleted) if deleted is not None else None)):
            if value is not None:
                sets.append(f"{col} = ?")
                args.append(value)
        with self._lock:
            self._con.execute(f"UPDATE dashboards SET {', '.join(sets)} WHERE id = ?", [*args, dashboard_id])

    def dashboard_tiles(self, dashboard_id: int) -> list[dict[str, Any]]:
        """The live insights on a dashboard, in tile order: ``{"id", "position", "insight"}``."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT t.id, t.position, {', '.join('i.' + c.strip() for c in self._INSIGHT_COLUMNS.split(','))} "
                "FROM dashboard_tiles t JOIN insights i ON i.id = t.insight_id "
                "WHERE t.dashboard_id = ? AND i.deleted = 0 ORDER BY t.position, t.id",
                (dashboard_id,)).fetchall()
        return [{"id": r[0], "position": r[1], "insight": self._insight_row(r[2:])} for r in rows]

    def reorder_dashboard_tiles(self, dashboard_id: int, insight_ids: list[int]) -> None:
        with self._transaction() as con:
            for pos, iid in enumerate(insight_ids):
                con.execute("UPDATE dashboard_tiles SET position = ? WHERE dashboard_id = ? AND insight_id = ?",
                            (pos, dashboard_id, iid))

    def remove_dashboard_tile(self, dashboard_id: int, insight_id: int) -> None:
        with self._lock:
            self._con.execute("DELETE FROM dashboard_tiles WHERE dashboard_id = ? AND insight_id = ?",
                              (dashboard_id, insight_id))

    # -- experiments (owned by sightline.experiments) ---------------------------------------
    _EXPERIMENT_COLUMNS = ("id, project_id, name, feature_flag_key, status, deleted, version, data, created_at, "
                           "created_by, updated_at, updated_by")

    @staticmethod
    def _experiment_row(r: tuple) -> dict[str, Any]:
        return {"id": r[0], "project_id": r[1], "name": r[2], "feature_flag_key": r[3], "status": r[4],
                "deleted": bool(r[5]), "version": r[6], "data": orjson.loads(r[7]), "created_at": r[8],
                "created_by": r[9], "updated_at": r[10], "updated_by": r[11]}

    def experiment_rows(self, project_id: int, include_deleted: bool = False) -> list[dict[str, Any]]:
        sql = f"SELECT {self._EXPERIMENT_COLUMNS} FROM experiments WHERE project_id = ?"
        if not include_deleted:
            sql += " AND deleted = 0"
        with self._lock:
            rows = self._con.execute(sql + " ORDER BY id", (project_id,)).fetchall()
        return [self._experiment_row(r) for r in rows]

    def experiment_row(self, project_id: int, experiment_id: int) -> dict[str, Any] | None:
        with self._lock:
            r = self._con.execute(f"SELECT {self._EXPERIMENT_COLUMNS} FROM experiments "
                                  "WHERE project_id = ? AND id = ?", (project_id, experiment_id)).fetchone()
        return self._experiment_row(r) if r else None

    def insert_experiment(self, project_id: int, *, name: str, feature_flag_key: str, status: str,
                          data: dict, actor: str | None) -> int:
        """Store a new experiment (version 1) and its 'created' activity in one transaction."""
        now = datetime.now(UTC).isoformat()
        with self._transaction() as con:
            cur = con.execute(
                "INSERT INTO experiments (project_id, name, feature_flag_key, status, deleted, version, data, "
                "created_at, created_by, updated_at, updated_by) VALUES (?, ?, ?, ?, 0, 1, ?, ?, ?, ?, ?)",
                (project_id, name, feature_flag_key, status, orjson.dumps(data).decode(), now, actor, now, actor))
            exp_id = cur.lastrowid
            after = {"id": exp_id, "name": name, "feature_flag_key": feature_flag_key, "status": status, **data}
            con.execute("INSERT INTO experiment_activity (project_id, experiment_id, version, action, actor, at, "
                        "before, after) VALUES (?, ?, 1, 'created', ?, ?, NULL, ?)",
                        (project_id, exp_id, actor, now, orjson.dumps(after).decode()))
        return exp_id

    def update_experiment(self, project_id: int, experiment_id: int, *, name: str, feature_flag_key: str,
                          status: str, data: dict, deleted: bool, expected_version: int, action: str,
                          actor: str | None, before: dict, after: dict) -> int:
        """Write a new version if nobody changed the experiment meanwhile; returns the new version
        (0 if ``expected_version`` is stale)."""
        now = datetime.now(UTC).isoformat()
        with self._transaction() as con:
            cur = con.execute(
                "UPDATE experiments SET name = ?, feature_flag_key = ?, status = ?, data = ?, deleted = ?, "
                "version = version + 1, updated_at = ?, updated_by = ? WHERE project_id = ? AND id = ? "
                "AND version = ?",
                (name, feature_flag_key, status, orjson.dumps(data).decode(), int(deleted), now, actor,
                 project_id, experiment_id, expected_version))
            if cur.rowcount != 1:
                return 0
            version = expected_version + 1
            _log_activity(con, "experiment_activity", "experiment_id", project_id, experiment_id, version, action,
                          actor, now, before, after)
        return version

    def experiment_activity(self, project_id: int, experiment_id: int) -> list[dict[str, Any]]:
        return self._activity("experiment_activity", "experiment_id", project_id, experiment_id)

    # -- audit trail and personal data (owned by sightline.persons.admin) ---------------------
    def audit_salt(self) -> str:
        """This data directory's secret salt for hashing person ids in the audit log."""
        with self._lock:
            row = self._con.execute("SELECT salt FROM audit_salt").fetchone()
            if row is None:
                salt = secrets.token_hex(32)
                self._con.execute("INSERT INTO audit_salt VALUES (?)", (salt,))
                return salt
            return row[0]

    def append_audit(self, *, actor: str, action: str, project_id: int, subject_hash: str | None,
                     details: dict[str, Any]) -> int:
        with self._lock:
            cur = self._con.execute(
                "INSERT INTO audit_log (at, actor, action, project_id, subject_hash, details) VALUES (?, ?, ?, ?, ?, ?)",
                (datetime.now(UTC).isoformat(), actor, action, project_id, subject_hash,
                 orjson.dumps(details).decode()))
        return cur.lastrowid

    def audit_rows(self, project_id: int, *, action: str | None = None, subject_hash: str | None = None,
                   limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        where, params = ["project_id = ?"], [project_id]
        if action:
            where.append("action = ?")
            params.append(action)
        if subject_hash:
            where.append("subject_hash = ?")
            params.append(subject_hash)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        with self._lock:
            rows = self._con.execute(
                f"SELECT id, at, actor, action, project_id, subject_hash, details FROM audit_log "
                f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [{"id": r[0], "at": r[1], "actor": r[2], "action": r[3], "project_id": r[4],
                 "subject_hash": r[5], "details": orjson.loads(r[6])} for r in rows]

    def forget_distinct_ids(self, project_id: int, distinct_ids: list[str]) -> int:
        """Remove the distinct ids from flag hash-key overrides and static cohorts, with SQLite's
        secure_delete (freed pages are zeroed) and a WAL checkpoint, so no copy stays on disk."""
        if not distinct_ids:
            return 0
        n = 0
        with self._lock:
            self._con.execute("PRAGMA secure_delete = ON")
            try:
                for i in range(0, len(distinct_ids), 500):
                    chunk = distinct_ids[i:i + 500]
                    marks = ", ".join("?" * len(chunk))
                    n += self._con.execute(
                        f"DELETE FROM flag_hash_key_overrides WHERE project_id = ? AND distinct_id IN ({marks})",
                        (project_id, *chunk)).rowcount
                    n += self._con.execute(
                        f"DELETE FROM cohort_static_members WHERE distinct_id IN ({marks}) AND cohort_id IN "
                        f"(SELECT id FROM cohorts WHERE project_id = ?)", (*chunk, project_id)).rowcount
                self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._con.execute("PRAGMA secure_delete = OFF")
        return n

    def close(self) -> None:
        with self._lock:
            self._con.close()
