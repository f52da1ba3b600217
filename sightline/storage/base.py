"""The one seam between Sightline and an event store.

Everything outside ``sightline/storage`` talks to a :class:`Storage`; only the backends
import their database drivers. A backend must:

* append a batch of events together with the identity changes it caused, durably and
  atomically (``append``): when it returns, a crash loses none of it; when it raises,
  none of it is visible;
* load the identity graph at start (``load_identity``);
* run read-only parameterised SQL for the query layer (``execute``) and stream rows out
  (``stream``) for exports;
* run *untrusted* read-only SQL (``query``): in a read-only transaction, interrupted after a time
  limit (:class:`QueryTimeout`), with at most ``max_rows`` rows fetched and the column types
  reported; database errors surface as :class:`QueryError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator, Protocol

import pyarrow as pa

from sightline.persons.identity import Changes, IdentityState


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    types: list[str] | None = None  # the backend's type names, when asked for (``query``)

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


class QueryTimeout(Exception):
    """A read query ran past its time limit and was interrupted."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the query was interrupted after {timeout_s:g} s")
        self.timeout_s = timeout_s


class QueryError(Exception):
    """The database refused or failed a read query (bad column, bad cast...); the message is
    the database's, without the echo of the SQL text."""


class Storage(Protocol):
    """What the rest of Sightline needs from an event store."""

    dialect: str  # "duckdb" | "clickhouse": picks the SQL dialect in sightline.query

    def append(self, events: pa.Table, changes: Changes) -> None:
        """Store events and identity changes in one durable transaction."""

    def append_part(self, events: pa.Table, changes: Changes) -> None:
        """Like ``append``, for large bulk batches (may use a faster, immutable layout)."""

    def load_identity(self, state: IdentityState) -> None:
        """Fill ``state`` with every person, distinct_id, override, group and group type."""

    def recent_event_uuids(self, since: datetime, limit: int) -> Iterable[tuple[int, str]]:
        """(project_id, uuid) of events ingested since ``since``, newest first (for dedup)."""

    def existing_uuids(self, project_id: int, uuids: pa.Array, min_ts: datetime | None = None,
                       max_ts: datetime | None = None) -> set[str]:
        """Which of ``uuids`` are already stored for the project (bulk-import dedup); the
        optional time range (of the candidates' timestamps) lets the store prune."""

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        """Run one read-only statement with bound parameters."""

    def stream(self, sql: str, params: dict[str, Any] | None = None,
               batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        """Run one read-only statement and yield its rows as Arrow record batches."""

    def query(self, sql: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None,
              max_rows: int | None = None, timezone: str | None = None) -> QueryResult:
        """Run one statement of untrusted, already-validated read-only SQL: inside a read-only
        transaction (any write fails), interrupted after ``timeout_s`` seconds
        (:class:`QueryTimeout`), fetching at most ``max_rows`` rows, with timestamps shown in
        ``timezone`` (an IANA name). Fills ``QueryResult.types``. Database errors are raised as
        :class:`QueryError`."""

    def checkpoint(self) -> None:
        """Make the on-disk files self-contained (fold the write-ahead log in)."""

    # Retention (optional: :mod:`sightline.ops.prune` checks ``hasattr``; the DuckDB store has
    # them, see :mod:`sightline.storage.duckdb_parts`; ClickHouse would expire data with a TTL).
    # Callers hold the store exclusively (``Writer.run_exclusive``) for real runs.
    def prune_events(self, project_id: int, before: datetime, *, dry_run: bool = False) -> Any:
        """Delete (or count, ``dry_run``) the project's events with ``timestamp < before`` and
        return the space; returns a report with ``to_json()`` (events, files, bytes)."""

    def compact_parts(self) -> Any:
        """Move settled recent rows into the time-partitioned layout and merge small files."""

    def close(self) -> None:
        """Flush and release the store."""
