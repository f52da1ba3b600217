"""The DuckDB event store as files: what backups and schema upgrades need below the storage
interface (a raw exclusive connection, its schema version, a consistent copy, row counts).

Used by :mod:`sightline.ops.backup` and :mod:`sightline.ops.migrations`; nothing else outside
``sightline/storage`` touches DuckDB.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import duckdb

from sightline.errors import DataDirLocked

DB_FILE = "events.duckdb"
_LOCK_RE = re.compile(r"(Conflicting lock|Could not set lock)", re.I)


def connect_exclusive(path: Path, *, read_only: bool = False) -> Any:
    """Open the store without creating or changing its schema. Holding this connection keeps
    every other process (a server) out of the data directory."""
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if _LOCK_RE.search(str(exc)):
            raise DataDirLocked(
                f"The data directory {Path(path).parent} is in use by another Sightline process "
                f"(is `sightline serve` running?). Stop it first. DuckDB said: {exc}") from None
        raise


def has_table(con: Any, name: str) -> bool:
    return con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'",
                       [name]).fetchone()[0] > 0


def schema_version(con: Any) -> int | None:
    """The store's schema version (``max(version)`` of ``sightline_schema``), None if unset."""
    if not has_table(con, "sightline_schema"):
        return None
    return con.execute("SELECT max(version) FROM sightline_schema").fetchone()[0]


def checkpoint_and_copy(con: Any, src: Path, dest_dir: Path) -> list[str]:
    """Fold DuckDB's log into the file and copy it (and a non-empty log, if any) to ``dest_dir``.
    The caller guarantees nothing writes meanwhile. Returns the copied file names."""
    con.execute("CHECKPOINT")
    names = [src.name]
    shutil.copyfile(src, dest_dir / src.name)
    wal = src.with_name(src.name + ".wal")
    if wal.exists() and wal.stat().st_size > 0:
        shutil.copyfile(wal, dest_dir / wal.name)
        names.append(wal.name)
    return names


def part_names(con: Any) -> list[str]:
    if not has_table(con, "event_parts"):
        return []
    return [r[0] for r in con.execute("SELECT name FROM event_parts ORDER BY name").fetchall()]


def table_counts(con: Any) -> dict[str, int]:
    """Rows per base table, plus ``events`` (the hot table and every registered part)."""
    names = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY table_name").fetchall()]
    out = {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}
    if "events_hot" in out:
        parts = con.execute("SELECT coalesce(sum(rows), 0) FROM event_parts").fetchone()[0] \
            if "event_parts" in out else 0
        out["events"] = int(out["events_hot"]) + int(parts)
    return out


def prepare_copy(path: Path, *, forget_log_position: bool) -> dict[str, int]:
    """Open a copied store (never the live one): optionally forget the ingestion-log position
    (the copy travels without the log, and a restored data directory starts a new log), fold
    everything into the file and return its row counts."""
    con = duckdb.connect(str(path))
    try:
        if forget_log_position and has_table(con, "ingest_wal"):
            con.execute("DELETE FROM ingest_wal")
        con.execute("CHECKPOINT")
        return table_counts(con)
    finally:
        con.close()
    # DuckDB removes an empty log on close


def counts_of(path: Path) -> dict[str, int]:
    """Row counts of a store file that no process holds (opened read-only)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return table_counts(con)
    finally:
        con.close()
