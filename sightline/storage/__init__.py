"""Storage backends behind one interface (:class:`~sightline.storage.base.Storage`)."""

from __future__ import annotations

import os
from pathlib import Path

from sightline.storage.base import QueryResult, Storage

__all__ = ["QueryResult", "Storage", "open_storage"]

STORE_HELP = ("duckdb (default: events.duckdb in the data directory), chdb (in-process ClickHouse under the "
              "data directory; chdb:///abs/path for another path), or clickhouse://user:pass@host:8123/db "
              "(a ClickHouse server or cluster; ?cluster=NAME for ON CLUSTER DDL, ?secure=1 for TLS)")


def open_storage(data_dir: str | Path, *, store: str | None = None, read_only: bool = False) -> Storage:
    """Open the event store: the embedded DuckDB file in ``data_dir`` unless ``store`` (or the
    ``SIGHTLINE_STORE`` environment variable) names another: ``chdb``, ``chdb:///path`` or
    ``clickhouse://user:pass@host:8123/db``."""
    store = store or os.environ.get("SIGHTLINE_STORE") or "duckdb"
    scheme = store.split(":", 1)[0].lower()
    if scheme == "duckdb":
        from sightline.storage.duckdb_backend import DuckDBStorage

        return DuckDBStorage(Path(data_dir) / "events.duckdb", read_only=read_only)
    if scheme == "chdb":
        from sightline.storage.clickhouse_backend import open_chdb

        return open_chdb(data_dir, store, read_only=read_only)
    if scheme in ("clickhouse", "clickhouses", "http", "https"):
        from sightline.storage.clickhouse_backend import open_clickhouse

        return open_clickhouse(store, read_only=read_only)
    raise ValueError(f"Unknown store {store!r}: use {STORE_HELP}.")
