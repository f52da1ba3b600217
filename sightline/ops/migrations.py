"""Schema versions of a data directory, and upgrades from older ones.

One number describes the layout of the whole data directory: ``SCHEMA_VERSION`` in
:mod:`sightline.storage.schema` (re-exported here as :data:`CURRENT_VERSION`). Each store
records the version it is at:

* ``meta.sqlite``: ``PRAGMA user_version`` and the ``schema_migrations`` table (version, when,
  by which Sightline). A file from before version 2 has ``user_version`` 0 (it is version 1).
* ``events.duckdb``: ``sightline_schema`` (the highest row).

**Additive changes need no migration**: tables and indexes added to ``meta.SCHEMA`` or to the
event store's DDL are ``CREATE ... IF NOT EXISTS`` and appear on the next start. Anything else
(a changed column, data rewritten into a new shape) bumps ``SCHEMA_VERSION`` and adds a
:class:`Step` below: its ``meta`` part runs in one SQLite transaction together with the
version bump; the event store's part runs in the backend when it opens (``_create_schema``
in :mod:`sightline.storage.duckdb_backend`, in one DuckDB transaction) or, when given, as the
step's ``events`` function here.

Opening a data directory (:func:`prepare`, called by :class:`~sightline.core.Sightline`):

* newer than this Sightline → :class:`SchemaTooNew`, naming both versions (nothing is changed);
* older → a backup first (``<data>/backups/pre-upgrade-v<from>-to-v<to>-<time>.tar``, taken
  while holding the store exclusively), then every step in order;
* current → nothing to do (one ``PRAGMA`` read).

The metadata store is bumped last in each step, so ``meta.sqlite`` at the current version means
the whole directory is: a crash in the middle of an upgrade is finished by the next start.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sightline.errors import SightlineError
from sightline.storage.schema import SCHEMA_VERSION

log = logging.getLogger("sightline.migrations")
UTC = timezone.utc
CURRENT_VERSION = SCHEMA_VERSION
META_FILE = "meta.sqlite"
DB_FILE = "events.duckdb"


class SchemaTooNew(SightlineError):
    status = 409
    type = "invalid_request"
    code = "schema_too_new"


class UpgradeNeeded(SightlineError):
    status = 409
    type = "invalid_request"
    code = "upgrade_needed"


# -- the steps --------------------------------------------------------------------------------
SCHEMA_MIGRATIONS_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL,
    sightline_version TEXT,
    note TEXT
)"""


def _meta_v2(con: sqlite3.Connection) -> None:
    """v1 → v2 (metadata): the metadata store records the data directory's version itself
    (``user_version`` and a history table), so tools read it without opening the event store
    (which a running server holds). The event store's part of v2 (Parquet parts partitioned by
    project and month) runs in the DuckDB backend when it opens."""
    con.execute(SCHEMA_MIGRATIONS_DDL)


@dataclass(frozen=True)
class Step:
    version: int                                          # the version this step reaches
    description: str
    meta: Callable[[sqlite3.Connection], None] | None = None
    events: Callable[[Any], None] | None = None           # DuckDB connection, in a transaction


STEPS: list[Step] = [
    Step(2, "record the schema version in meta.sqlite; partition event parts by project and month",
         meta=_meta_v2),
]
# one step per version up to the current one; a version without an entry above only changed the
# event store (its backend migrates it on open), so its step just records the version
_BY_VERSION = {s.version: s for s in STEPS}
STEPS = [_BY_VERSION.get(v) or Step(v, "event store changes (applied by the storage backend)")
         for v in range(2, CURRENT_VERSION + 1)]


# -- reading versions -------------------------------------------------------------------------
@dataclass
class Versions:
    meta: int | None     # None: no metadata store yet
    events: int | None   # None: no event store yet, or not read

    @property
    def data_version(self) -> int | None:
        known = [v for v in (self.meta, self.events) if v is not None]
        return min(known) if known else None


def sqlite_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to a SQLite file (any characters in its path)."""
    from urllib.parse import quote

    return sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)


def meta_version(path: Path) -> int | None:
    """The metadata store's version: ``user_version``, 1 for a file from before versions were
    recorded there, None when there is no store (no file, or no tables yet)."""
    if not Path(path).exists():
        return None
    con = sqlite_readonly(path)
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version:
            return int(version)
        has_tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                 "AND name = 'projects'").fetchone()[0]
        return 1 if has_tables else None
    finally:
        con.close()


def read_versions(data_dir: Path, *, con: Any = None, read_only: bool = False) -> Versions:
    """Both stores' versions (the event store's only if ``con`` is given or nobody holds it;
    ``read_only`` opens it without writing anything)."""
    from sightline.storage import duckdb_files

    data_dir = Path(data_dir)
    meta = meta_version(data_dir / META_FILE)
    events = None
    if con is not None:
        events = duckdb_files.schema_version(con)
    elif (data_dir / DB_FILE).exists():
        db = duckdb_files.connect_exclusive(data_dir / DB_FILE, read_only=read_only)
        try:
            events = duckdb_files.schema_version(db)
        finally:
            db.close()
    return Versions(meta, events)


def _too_new(data_dir: Path, version: int, where: str) -> SchemaTooNew:
    from sightline.ops.backup import sightline_version

    return SchemaTooNew(
        f"The data directory {data_dir} has schema version {version} ({where}), but this Sightline "
        f"({sightline_version()}) supports schema version {CURRENT_VERSION} at most: a newer Sightline "
        f"wrote it. Upgrade Sightline to open it (or restore a backup taken before the upgrade, in "
        f"{Path(data_dir) / 'backups'}).")


# -- applying ---------------------------------------------------------------------------------
def stamp_meta(con: sqlite3.Connection, version: int = CURRENT_VERSION, note: str = "created") -> None:
    """Record ``version`` in a metadata store (a new one, or after a migration step)."""
    from sightline.ops.backup import sightline_version

    con.execute(SCHEMA_MIGRATIONS_DDL)
    con.execute("INSERT OR REPLACE INTO schema_migrations (version, applied_at, sightline_version, note) "
                "VALUES (?, ?, ?, ?)", (version, datetime.now(UTC).isoformat(), sightline_version(), note))
    con.execute(f"PRAGMA user_version = {int(version)}")


def _apply_meta(path: Path, step: Step) -> None:
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            if step.meta is not None:
                step.meta(con)
            stamp_meta(con, step.version, f"migrated: {step.description}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()


def _apply_events(db: Any, step: Step) -> None:
    db.execute("BEGIN")
    try:
        step.events(db)
        db.execute("INSERT INTO sightline_schema VALUES (?)", [step.version])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


@dataclass
class UpgradeResult:
    from_version: int
    to_version: int
    backup: Path


def prepare(data_dir: Path, *, read_only: bool = False, backup: bool = True) -> UpgradeResult | None:
    """Check a data directory's version before it is opened; upgrade it if it is older."""
    data_dir = Path(data_dir)
    meta = meta_version(data_dir / META_FILE)
    if meta is not None and meta > CURRENT_VERSION:
        raise _too_new(data_dir, meta, "meta.sqlite")
    if meta == CURRENT_VERSION:
        return None  # the event store checks its own version when it opens
    has_events = (data_dir / DB_FILE).exists()
    if meta is None and not has_events:
        return None  # a new data directory: the stores are created at the current version
    if read_only:
        if meta is not None:
            raise UpgradeNeeded(
                f"The data directory {data_dir} has schema version {meta}; this Sightline needs version "
                f"{CURRENT_VERSION}. Start `sightline serve --data-dir {data_dir}` once to upgrade it "
                f"(a backup is taken first).")
        return None
    return upgrade(data_dir, backup=backup)


def upgrade(data_dir: Path, *, backup: bool = True) -> UpgradeResult | None:
    """Back the data directory up, then run every step it lacks, in order."""
    from sightline.ops import backup as backups
    from sightline.storage import duckdb_files

    data_dir = Path(data_dir)
    db = duckdb_files.connect_exclusive(data_dir / DB_FILE) if (data_dir / DB_FILE).exists() else None
    try:
        versions = read_versions(data_dir, con=db) if db is not None else Versions(
            meta_version(data_dir / META_FILE), None)
        for where, v in (("meta.sqlite", versions.meta), ("events.duckdb", versions.events)):
            if v is not None and v > CURRENT_VERSION:
                raise _too_new(data_dir, v, where)
        start = versions.data_version
        if start is None or start >= CURRENT_VERSION:
            return None
        path = backups.staged_backup_path(data_dir, f"pre-upgrade-v{start}-to-v{CURRENT_VERSION}")
        if backup:
            log.warning("upgrading %s from schema version %d to %d; backing it up first to %s",
                        data_dir, start, CURRENT_VERSION, path)
            backups.backup_offline(data_dir, path, con=db)
        for step in STEPS:
            if step.version <= start:
                continue
            if db is not None and step.events is not None and (versions.events or 0) < step.version:
                _apply_events(db, step)
            if versions.meta is not None and versions.meta < step.version:
                _apply_meta(data_dir / META_FILE, step)
            log.warning("schema version %d: %s", step.version, step.description)
    finally:
        if db is not None:
            db.close()
    # the event store finishes its own part of each step when it opens (in one transaction)
    return UpgradeResult(start, CURRENT_VERSION, path)
