"""Storage backends behind one interface (:class:`~sightline.storage.base.Storage`)."""

from __future__ import annotations

from pathlib import Path

from sightline.storage.base import QueryResult, Storage

__all__ = ["QueryResult", "Storage", "open_storage"]


def open_storage(data_dir: str | Path, *, store: str | None = None, read_only: bool = False) -> Storage:
    """Open the event store: the embedded DuckDB file in ``data_dir`` unless ``store`` names another."""
    if store and not store.startswith("duckdb"):
        raise ValueError(f"Unknown store {store!r}: this Sightline supports the embedded DuckDB store.")
    from sightline.storage.duckdb_backend import DuckDBStorage

    path = Path(data_dir) / "events.duckdb"
    return DuckDBStorage(path, read_only=read_only)
