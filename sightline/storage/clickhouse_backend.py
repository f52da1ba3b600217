"""ClickHouse behind the storage seam: a real cluster (``clickhouse://``) or in-process (``chdb``).

Both transports run the same DDL and the same SQL; only how bytes reach the engine differs
(:class:`ChdbTransport`: chdb's embedded server in this process; :class:`HttpTransport`:
``clickhouse-connect`` over HTTP). Everything else — schema, identity tables, parameter
binding, result conversion — is shared.

Layout (see ``docs/deploy-clickhouse.md``):

* ``events``: ``MergeTree`` partitioned by month and ordered for event analytics
  (``project_id, toDate(timestamp), event, cityHash64(distinct_id), timestamp``). The
  derived columns (``session_id``, ``elements_chain``, the materialized hot properties) are
  ``DEFAULT JSONExtract(properties, …)`` columns, so every write path derives them the same way.
* persons, distinct ids, overrides, groups: ``ReplacingMergeTree(version[, is_deleted])``
  tables with a ``FINAL`` view of the same name as the DuckDB table (``persons`` …), so the
  query layer joins them unchanged and always sees one current row per key.
* Deduplication of events by ``uuid`` happens at insert time, not in the engine: the writer
  keeps the recent uuids (warmed from :meth:`recent_event_uuids`) and bulk imports ask
  :meth:`existing_uuids`. A ``ReplacingMergeTree`` on events would need ``FINAL`` (or merge-time
  eventual dedup) in every query, which costs more than the check.

Atomicity: ClickHouse has no multi-table transactions. :meth:`append` writes the identity
changes first, then the events (one insert, one part: atomic), then the ingestion-log position
as the commit marker. A crash in between replays the log from the last marker; the replayed
events are dropped as duplicates (the writer warms its uuid set from the store) and the identity
rows are idempotent upserts (same version).

Dialect notes: "naive" local wall times (DuckDB ``TIMESTAMP``) are ``DateTime64(6, 'Etc/UTC')``
here and instants (``TIMESTAMPTZ``) are ``DateTime64(6, 'UTC')``; results convert the former
to naive and the latter to aware datetimes, exactly as DuckDB returns them.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs, unquote, urlparse

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sightline.errors import InvalidInput
from sightline.persons.identity import ChangeRows, Changes, Group, IdentityState, Person, change_rows
from sightline.storage.base import QueryError, QueryResult, QueryTimeout
from sightline.storage.schema import DERIVED_COLUMNS, EVENT_BATCH_SCHEMA, GROUP_COLUMNS, SCHEMA_VERSION

UTC = timezone.utc
LOCAL_TZ = "Etc/UTC"  # the time zone label of local wall times ("naive")

# Settings every statement runs with: SQL NULL semantics for outer joins and empty aggregates,
# the "naive" wall-time zone, exact distinct counts, and IN that matches NULLs like DuckDB.
SETTINGS: dict[str, Any] = {
    "join_use_nulls": 1,
    "session_timezone": LOCAL_TZ,
    "aggregate_functions_null_for_empty": 1,
    "count_distinct_implementation": "uniqExact",
    "union_default_mode": "ALL",
    "allow_experimental_correlated_subqueries": 1,
    "cast_keep_nullable": 1,
}

_DB_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _json_text(key: str) -> str:
    if not all(c.isalnum() or c in "$_-." for c in key):
        raise ValueError(key)
    return f"JSONExtract(properties, '{key}', 'Nullable(String)')"


def events_ddl(table: str = "events", engine: str = "MergeTree") -> str:
    cols = ["uuid UUID", "project_id Int32", "event String", "distinct_id String", "person_id UUID",
            "timestamp DateTime64(6, 'UTC')", "created_at DateTime64(6, 'UTC')", "properties Nullable(String)"]
    cols += [f"{c} Nullable(String)" for c in GROUP_COLUMNS]
    cols += [f"{col} Nullable(String) DEFAULT {_json_text(prop)}" for prop, col in DERIVED_COLUMNS.items()]
    return (f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)}) ENGINE = {engine} "
            "PARTITION BY toYYYYMM(timestamp) "
            "ORDER BY (project_id, toDate(timestamp), event, cityHash64(distinct_id), timestamp)")


def other_ddl(rmt: str = "ReplacingMergeTree", mt: str = "MergeTree") -> list[str]:
    """Identity and bookkeeping tables; ``rmt``/``mt`` let a cluster use Replicated engines."""
    return [
        f"""CREATE TABLE IF NOT EXISTS persons_data (id UUID, project_id Int32, created_at DateTime64(6, 'UTC'),
            properties String, properties_meta String, is_identified Bool, version Int64, _v Int64,
            is_deleted UInt8 DEFAULT 0) ENGINE = {rmt}(_v, is_deleted) ORDER BY (id)""",
        """CREATE VIEW IF NOT EXISTS persons AS SELECT id, project_id, created_at, properties, properties_meta,
            is_identified, version FROM persons_data FINAL""",
        f"""CREATE TABLE IF NOT EXISTS person_distinct_ids_data (project_id Int32, distinct_id String, person_id UUID,
            version Int64) ENGINE = {rmt}(version) ORDER BY (project_id, distinct_id)""",
        """CREATE VIEW IF NOT EXISTS person_distinct_ids AS SELECT project_id, distinct_id, person_id, version
            FROM person_distinct_ids_data FINAL""",
        f"""CREATE TABLE IF NOT EXISTS person_overrides_data (project_id Int32, old_person_id UUID,
            override_person_id UUID, version Int64, is_deleted UInt8 DEFAULT 0)
            ENGINE = {rmt}(version, is_deleted) ORDER BY (project_id, old_person_id)""",
        """CREATE VIEW IF NOT EXISTS person_overrides AS SELECT project_id, old_person_id, override_person_id
            FROM person_overrides_data FINAL""",
        f"""CREATE TABLE IF NOT EXISTS person_merges (project_id Int32, merged_at DateTime64(6, 'UTC'),
            source_person_id UUID, target_person_id UUID, source_distinct_ids String, source_properties String,
            source_is_identified Bool, source_created_at DateTime64(6, 'UTC'), reason String)
            ENGINE = {mt} ORDER BY (project_id, merged_at)""",
        f"""CREATE TABLE IF NOT EXISTS groups_data (project_id Int32, group_type_index Int32, group_key String,
            created_at DateTime64(6, 'UTC'), properties String, properties_meta String, version Int64, _v Int64)
            ENGINE = {rmt}(_v) ORDER BY (project_id, group_type_index, group_key)""",
        """CREATE VIEW IF NOT EXISTS groups AS SELECT project_id, group_type_index, group_key, created_at,
            properties, properties_meta, version FROM groups_data FINAL""",
        f"""CREATE TABLE IF NOT EXISTS group_types (project_id Int32, group_type String, group_type_index Int32)
            ENGINE = {rmt} ORDER BY (project_id, group_type)""",
        f"""CREATE TABLE IF NOT EXISTS ingestion_warnings (project_id Int32, type String, details String,
            timestamp DateTime64(6, 'UTC')) ENGINE = {mt} ORDER BY (project_id, timestamp)""",
        f"""CREATE TABLE IF NOT EXISTS sightline_schema (version Int32) ENGINE = {rmt} ORDER BY version""",
        f"""CREATE TABLE IF NOT EXISTS ingest_wal (k UInt8, segment Int64, offset Int64, version Int64)
            ENGINE = {rmt}(version) ORDER BY k""",
        # migrate's resume marks: which source parts/chunks are copied already
        f"""CREATE TABLE IF NOT EXISTS migrate_progress (source String, chunk String, rows Int64,
            version Int64) ENGINE = {rmt}(version) ORDER BY (source, chunk)""",
    ]


# -- parameters: $name → {name:Type} ------------------------------------------------------------

_TOKEN_RE = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|\$([A-Za-z_][A-Za-z0-9_]*)")


def ch_type(value: Any) -> str:
    if value is None:
        return "Nullable(String)"
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int):
        return "Int64"
    if isinstance(value, float):
        return "Float64"
    if isinstance(value, datetime):
        return "DateTime64(6, 'UTC')" if value.tzinfo is not None else f"DateTime64(6, '{LOCAL_TZ}')"
    if isinstance(value, date):
        return "Date"
    if isinstance(value, uuidlib.UUID):
        return "UUID"
    if isinstance(value, (list, tuple)):
        first = next((v for v in value if v is not None), "")
        inner = ch_type(first)
        if any(v is None for v in value) and not inner.startswith("Nullable"):
            inner = f"Nullable({inner})"
        return f"Array({inner})"
    return "String"


def _ch_text(value: Any, nested: bool = False) -> str:
    """A value in ClickHouse's text form (quoted inside arrays)."""
    if value is None:
        return "NULL" if nested else "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    elif isinstance(value, date):
        text = value.isoformat()
    elif isinstance(value, (list, tuple)):
        return "[" + ",".join(_ch_text(v, True) for v in value) + "]"
    else:
        text = str(value)
    if nested:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def bind(sql: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Rewrite ``$name`` placeholders (outside string literals) as typed ClickHouse parameters."""
    params = params or {}
    used: dict[str, Any] = {}

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name is None or name not in params:
            return m.group(0)
        used[name] = params[name]
        return "{" + name + ":" + ch_type(params[name]) + "}"

    return _TOKEN_RE.sub(sub, sql), used


# -- results ------------------------------------------------------------------------------------

def _normalize_table(table: pa.Table) -> pa.Table:
    """Local wall times (zone ``Etc/UTC``) become naive timestamps, instants UTC-aware ones."""
    cols, fields = [], []
    for f, col in zip(table.schema, table.columns):
        t = f.type
        if pa.types.is_timestamp(t) and t.tz is not None:
            new = pa.timestamp("us") if t.tz == LOCAL_TZ else pa.timestamp("us", tz="UTC")
            col = col.cast(new)
            f = pa.field(f.name, new)
        elif isinstance(t, pa.ExtensionType):
            col = pa.chunked_array([c.storage for c in col.chunks], t.storage_type)
            f = pa.field(f.name, t.storage_type)
            if str(t).startswith("extension<arrow.uuid"):
                cols.append(col)
                fields.append(pa.field(f.name, pa.binary(16)))
                continue
        cols.append(col)
        fields.append(f)
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def _rows(table: pa.Table) -> list[tuple]:
    uuid_cols = {i for i, f in enumerate(table.schema) if isinstance(f.type, pa.ExtensionType)
                 and "uuid" in str(f.type)}
    table = _normalize_table(table)
    columns = []
    for i, col in enumerate(table.columns):
        values = col.to_pylist()
        if i in uuid_cols:
            values = [uuidlib.UUID(bytes=v) if v is not None else None for v in values]
        columns.append(values)
    return list(zip(*columns)) if columns else []


# -- transports ---------------------------------------------------------------------------------

class ChdbTransport:
    """ClickHouse's engine in this process (chdb). One embedded server per process and path."""

    kind = "chdb"

    def __init__(self, path: Path, database: str) -> None:
        from chdb import session as chs

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._s = chs.Session(str(path))
        except Exception as exc:  # noqa: BLE001
            raise InvalidInput(f"Cannot open the chdb store at {path}: {exc}. chdb runs one embedded "
                               "ClickHouse per process; set SIGHTLINE_CHDB_PATH to share one engine "
                               "between several data directories.", code="store_unavailable") from None
        self._s.query(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        self._s.query(f"USE `{database}`")
        for k, v in SETTINGS.items():
            self._s.query(f"SET {k} = {_literal(v)}")

    def command(self, sql: str, params: dict | None = None, settings: dict | None = None) -> None:
        self._run(sql, params, settings, "CSV")

    def commands(self, statements: list[str]) -> None:
        self._s.query(";\n".join(statements), "CSV")  # one round trip

    def query_arrow(self, sql: str, params: dict | None = None, settings: dict | None = None) -> pa.Table:
        res = self._run(sql, params, settings, "ArrowTable")
        return res

    def _run(self, sql: str, params, settings, fmt):
        if settings:
            sql = f"{sql} SETTINGS " + ", ".join(f"{k} = {_literal(v)}" for k, v in settings.items())
        text_params = {k: _ch_text(v) for k, v in (params or {}).items()} or None
        try:
            return self._s.query(sql, fmt, params=text_params)
        except Exception:
            if fmt == "ArrowTable":
                self._recover()
            raise

    def _recover(self) -> None:
        """chdb leaves a half-written Arrow stream behind when a query fails while streaming
        (a timeout, throwIf): the next Arrow result would be garbage. Read it off here."""
        for _ in range(3):
            try:
                self._s.query("SELECT 1", "ArrowTable")
                return
            except Exception:  # noqa: BLE001 - the stale stream; the next read is clean
                continue

    def insert_arrow(self, table: str, columns: list[str], data: pa.Table) -> None:
        _sl_rows = data  # noqa: F841 - chdb's Python() table function reads this local
        self._s.query(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} "
                      f"FROM Python(_sl_rows)")

    def close(self) -> None:
        self._s.close()


class HttpTransport:
    """A ClickHouse server or cluster over HTTP (clickhouse-connect)."""

    kind = "clickhouse"

    def __init__(self, url: str) -> None:
        try:
            import clickhouse_connect
        except ImportError:
            raise InvalidInput("The ClickHouse store needs clickhouse-connect: pip install 'sightline[clickhouse]'.",
                               code="store_unavailable") from None
        u = urlparse(url)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        self.database = (u.path or "/").strip("/") or "default"
        self.cluster = q.pop("cluster", None)
        secure = u.scheme in ("clickhouses", "https") or q.pop("secure", "") in ("1", "true")
        boot = clickhouse_connect.get_client(
            host=u.hostname or "localhost", port=u.port or (8443 if secure else 8123),
            username=unquote(u.username or "default"), password=unquote(u.password or ""), secure=secure)
        on_cluster = f" ON CLUSTER `{self.cluster}`" if self.cluster else ""
        boot.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`{on_cluster}")
        boot.close()
        self._c = clickhouse_connect.get_client(
            host=u.hostname or "localhost", port=u.port or (8443 if secure else 8123),
            username=unquote(u.username or "default"), password=unquote(u.password or ""), secure=secure,
            database=self.database, settings=dict(SETTINGS), autogenerate_session_id=False)
        self._lock = threading.Lock()

    def command(self, sql: str, params: dict | None = None, settings: dict | None = None) -> None:
        self._c.command(sql, parameters=params or None, settings=settings)

    def commands(self, statements: list[str]) -> None:
        for sql in statements:  # HTTP takes one statement per request
            self._c.command(sql)

    def query_arrow(self, sql: str, params: dict | None = None, settings: dict | None = None) -> pa.Table:
        return self._c.query_arrow(sql, parameters=params or None, settings=settings)

    def insert_arrow(self, table: str, columns: list[str], data: pa.Table) -> None:
        self._c.insert_arrow(table, data.select(columns))

    def close(self) -> None:
        self._c.close()


def _literal(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(int(v)) if isinstance(v, bool) else str(v)


# -- the storage ---------------------------------------------------------------------------------

@dataclass
class PruneReport:
    """What a prune removed (or would remove); the same JSON as the DuckDB store's report
    (``files_*`` count month partitions: dropped whole, or rewritten by a mutation)."""

    project_id: int
    before: datetime
    dry_run: bool
    events: int = 0
    files_deleted: int = 0
    files_rewritten: int = 0
    disk_bytes_before: int = 0
    disk_bytes_after: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"project_id": self.project_id,
                "before": self.before.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "dry_run": self.dry_run, "events": self.events, "hot_events": 0, "part_events": self.events,
                "files_deleted": self.files_deleted, "files_rewritten": self.files_rewritten,
                "part_bytes": max(0, self.disk_bytes_before - self.disk_bytes_after),
                "disk_bytes_before": self.disk_bytes_before, "disk_bytes_after": self.disk_bytes_after,
                "bytes_freed": max(0, self.disk_bytes_before - self.disk_bytes_after)}


@dataclass
class CompactReport:
    def to_json(self) -> dict[str, Any]:
        return {"hot_rows_moved": 0, "files_written": 0, "files_removed": 0, "partitions": []}


_BATCH_COLUMNS = [f.name for f in EVENT_BATCH_SCHEMA]
_TZ_RE = re.compile(r"[A-Za-z0-9_+\-/]{1,64}")
_ECHO_RE = re.compile(r"\s*In scope .*\Z|\s*\(version [^)]*\)\s*\Z", re.S)


class ClickHouseStorage:
    dialect = "clickhouse"

    def __init__(self, transport, *, read_only: bool = False, cluster: str | None = None) -> None:
        self.t = transport
        self.read_only = read_only
        self.cluster = cluster
        self._lock = threading.Lock()
        self._version = time.time_ns()
        if not read_only:
            self._create_schema()

    # -- schema -------------------------------------------------------------------------
    def _create_schema(self) -> None:
        self.t.commands([events_ddl()] + [" ".join(ddl.split()) for ddl in other_ddl()])
        rows = _rows(self.t.query_arrow("SELECT max(version) FROM sightline_schema"))
        current = rows[0][0] if rows else None
        if current is None:
            self.t.command(f"INSERT INTO sightline_schema VALUES ({SCHEMA_VERSION})")
        elif current > SCHEMA_VERSION:
            raise InvalidInput(f"This ClickHouse database uses schema version {current}, newer than this "
                               f"Sightline understands ({SCHEMA_VERSION}). Upgrade Sightline.", code="schema_too_new")

    def schema_version(self) -> int:
        return _rows(self.t.query_arrow("SELECT max(version) FROM sightline_schema"))[0][0]

    def _next_version(self) -> int:
        # monotonic versions for ReplacingMergeTree rows written by this process
        self._version = max(self._version + 1, time.time_ns())
        return self._version

    # -- the write path ------------------------------------------------------------------
    def wal_position(self) -> tuple[int, int] | None:
        rows = _rows(self.t.query_arrow("SELECT segment, offset FROM ingest_wal FINAL WHERE k = 0"))
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def append(self, events: pa.Table, changes: Changes | ChangeRows,
               wal_position: tuple[int, int] | None = None) -> None:
        with self._lock:
            if changes:
                self._write_changes(changes)
            if events.num_rows:
                self._insert_events(events)
            if wal_position is not None:
                self.t.command(f"INSERT INTO ingest_wal VALUES (0, {int(wal_position[0])}, "
                               f"{int(wal_position[1])}, {self._next_version()})")

    def append_part(self, events: pa.Table, changes: Changes | ChangeRows) -> None:
        # every insert is already an immutable part in a MergeTree
        self.append(events, changes)

    def _insert_events(self, events: pa.Table) -> None:
        events = events.select(_BATCH_COLUMNS)
        self.t.insert_arrow("events", _BATCH_COLUMNS, events)

    def insert_event_rows(self, rows: pa.Table) -> None:
        """Insert stored event rows as they are (batch columns plus derived ones); for migrations."""
        cols = [c for c in rows.column_names]
        self.t.insert_arrow("events", cols, rows)

    def _write_changes(self, changes: Changes | ChangeRows) -> None:
        ch = changes if isinstance(changes, ChangeRows) else change_rows(changes)
        ts_type = pa.timestamp("us", tz="UTC")
        v = self._next_version()

        def ts(values: list[int]) -> pa.Array:
            return pa.array(values, pa.int64()).cast(ts_type)

        def uuids(values: list[str]) -> pa.Array:
            return pa.array(values, pa.string())

        deleted = sorted(ch.deleted_persons - set(ch.persons))
        if deleted:
            # a tombstone row with a higher version hides the person (FINAL drops it)
            self.t.command("INSERT INTO persons_data (id, project_id, created_at, properties, properties_meta, "
                           "is_identified, version, _v, is_deleted) SELECT id, project_id, created_at, properties, "
                           "properties_meta, is_identified, version, {v:Int64}, 1 FROM persons_data FINAL "
                           "WHERE has({ids:Array(UUID)}, id)", {"v": v, "ids": _ch_text(deleted)})
        if ch.persons:
            ids = list(ch.persons)
            rows = [ch.persons[i] for i in ids]
            tbl = pa.table({
                "id": uuids(ids),
                "project_id": pa.array([r[0] for r in rows], pa.int32()),
                "created_at": ts([r[1] for r in rows]),
                "properties": pa.array([r[2] for r in rows], pa.string()),
                "properties_meta": pa.array([r[3] for r in rows], pa.string()),
                "is_identified": pa.array([bool(r[4]) for r in rows]),
                "version": pa.array([r[5] for r in rows], pa.int64()),
                "_v": pa.array([v] * len(rows), pa.int64()),  # later writes win
            })
            self._insert_cast("persons_data", tbl, {"id": "toUUID(id)"})
        if ch.distinct_ids:
            items = list(ch.distinct_ids.items())
            tbl = pa.table({
                "project_id": pa.array([k[0] for k, _ in items], pa.int32()),
                "distinct_id": pa.array([k[1] for k, _ in items], pa.string()),
                "person_id": uuids([p for _, p in items]),
                "version": pa.array([v] * len(items), pa.int64()),
            })
            self._insert_cast("person_distinct_ids_data", tbl, {"person_id": "toUUID(person_id)"})
        if ch.overrides:
            items = list(ch.overrides.items())
            tbl = pa.table({
                "project_id": pa.array([k[0] for k, _ in items], pa.int32()),
                "old_person_id": uuids([k[1] for k, _ in items]),
                "override_person_id": uuids([val for _, val in items]),
                "version": pa.array([v] * len(items), pa.int64()),
                # an override back to itself removes the mapping
                "is_deleted": pa.array([1 if k[1] == val else 0 for k, val in items], pa.uint8()),
            })
            self._insert_cast("person_overrides_data", tbl, {"old_person_id": "toUUID(old_person_id)",
                                                             "override_person_id": "toUUID(override_person_id)"})
        if ch.merges:
            m = ch.merges
            tbl = pa.table({
                "project_id": pa.array([r[0] for r in m], pa.int32()),
                "merged_at": ts([r[1] for r in m]),
                "source_person_id": uuids([r[2] for r in m]),
                "target_person_id": uuids([r[3] for r in m]),
                "source_distinct_ids": pa.array([r[4] for r in m], pa.string()),
                "source_properties": pa.array([r[5] for r in m], pa.string()),
                "source_is_identified": pa.array([bool(r[6]) for r in m]),
                "source_created_at": ts([r[7] for r in m]),
                "reason": pa.array([r[8] for r in m], pa.string()),
            })
            self._insert_cast("person_merges", tbl, {"source_person_id": "toUUID(source_person_id)",
                                                     "target_person_id": "toUUID(target_person_id)"})
        if ch.groups:
            keys = list(ch.groups)
            rows = [ch.groups[k] for k in keys]
            tbl = pa.table({
                "project_id": pa.array([k[0] for k in keys], pa.int32()),
                "group_type_index": pa.array([k[1] for k in keys], pa.int32()),
                "group_key": pa.array([k[2] for k in keys], pa.string()),
                "created_at": ts([r[0] for r in rows]),
                "properties": pa.array([r[1] for r in rows], pa.string()),
                "properties_meta": pa.array([r[2] for r in rows], pa.string()),
                "version": pa.array([r[3] for r in rows], pa.int64()),
                "_v": pa.array([v] * len(rows), pa.int64()),
            })
            self._insert_cast("groups_data", tbl, {})
        if ch.group_types:
            tbl = pa.table({
                "project_id": pa.array([g[0] for g in ch.group_types], pa.int32()),
                "group_type": pa.array([g[1] for g in ch.group_types], pa.string()),
                "group_type_index": pa.array([g[2] for g in ch.group_types], pa.int32()),
            })
            self._insert_cast("group_types", tbl, {})
        if ch.warnings:
            w = ch.warnings
            tbl = pa.table({
                "project_id": pa.array([r[0] for r in w], pa.int32()),
                "type": pa.array([r[1] for r in w], pa.string()),
                "details": pa.array([r[2] for r in w], pa.string()),
                "timestamp": ts([r[3] for r in w]),
            })
            self._insert_cast("ingestion_warnings", tbl, {})

    def _insert_cast(self, table: str, data: pa.Table, casts: dict[str, str]) -> None:
        # UUID columns arrive as text; ClickHouse converts on insert
        self.t.insert_arrow(table, data.column_names, data)

    # -- loading -------------------------------------------------------------------------
    def load_identity(self, state: IdentityState) -> None:
        q = self.t.query_arrow
        for row in _rows(q("SELECT toString(id), project_id, created_at, properties, properties_meta, "
                           "is_identified, version FROM persons")):
            meta = orjson.loads(row[4]) if row[4] else {}
            state.add_loaded_person(Person(
                id=row[0], project_id=row[1], created_at=row[2].astimezone(UTC),
                properties=orjson.loads(row[3]), properties_ts=meta.get("ts", {}),
                once_keys=set(meta.get("once", [])), is_identified=bool(row[5]), version=row[6]))
        for project_id, did, pid in _rows(q("SELECT project_id, distinct_id, toString(person_id) "
                                            "FROM person_distinct_ids ORDER BY version")):
            state.add_loaded_distinct_id(project_id, did, pid)
        for project_id, old, new in _rows(q("SELECT project_id, toString(old_person_id), "
                                            "toString(override_person_id) FROM person_overrides")):
            state.add_loaded_override(project_id, old, new)
        for project_id, group_type, index in _rows(q("SELECT project_id, group_type, group_type_index "
                                                     "FROM group_types FINAL")):
            state.group_types.setdefault(project_id, {})[group_type] = index
        for row in _rows(q("SELECT project_id, group_type_index, group_key, created_at, properties, "
                           "properties_meta, version FROM groups")):
            meta = orjson.loads(row[5]) if row[5] else {}
            state.groups[(row[0], row[1], row[2])] = Group(
                project_id=row[0], group_type_index=row[1], group_key=row[2],
                created_at=row[3].astimezone(UTC), properties=orjson.loads(row[4]),
                properties_ts=meta.get("ts", {}), version=row[6])

    def recent_event_uuids(self, since: datetime, limit: int) -> Iterable[tuple[int, str]]:
        sql, params = bind("SELECT project_id, toString(uuid) FROM events WHERE created_at >= $since "
                           "ORDER BY created_at DESC LIMIT $limit", {"since": since, "limit": int(limit)})
        return _rows(self.t.query_arrow(sql, params))

    def existing_uuids(self, project_id: int, uuids: pa.Array, min_ts: datetime | None = None,
                       max_ts: datetime | None = None) -> set[str]:
        where = "project_id = $p"
        params: dict[str, Any] = {"p": project_id}
        if min_ts is not None and max_ts is not None:
            where += " AND timestamp BETWEEN $lo AND $hi"
            params.update(lo=min_ts, hi=max_ts)
        out: set[str] = set()
        values = [u for u in uuids.to_pylist() if u]
        for i in range(0, len(values), 50_000):
            params["u"] = values[i:i + 50_000]
            sql, bound = bind(f"SELECT toString(uuid) FROM events WHERE {where} "
                              "AND uuid IN (SELECT toUUIDOrNull(arrayJoin($u)))", params)
            out.update(r[0] for r in _rows(self.t.query_arrow(sql, bound)))
        return out

    # -- reading -------------------------------------------------------------------------
    def execute(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        sql, bound = bind(sql, params)
        try:
            table = self.t.query_arrow(sql, bound)
        except Exception as exc:  # noqa: BLE001 - the engine's errors are its own exception types
            raise QueryError(_message(exc)) from None
        return QueryResult(list(table.column_names), _rows(table))

    def query(self, sql: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None,
              max_rows: int | None = None, timezone: str | None = None, readonly: int = 2) -> QueryResult:
        """Read-only (``readonly=2``: reads and query-level settings only; user SQL passes
        ``readonly=1``: no setting can change either), interrupted after ``timeout_s``
        (``max_execution_time``), at most ``max_rows`` rows. Instants come back in ``timezone``;
        ``types`` are DuckDB-style names of the result's Arrow types (``VARCHAR``, ``BIGINT``,
        ``UBIGINT``, ``TIMESTAMP WITH TIME ZONE``…), so both stores describe results alike."""
        settings: dict[str, Any] = {"readonly": 1 if readonly == 1 else 2}
        if timeout_s is not None:
            settings["max_execution_time"] = max(float(timeout_s), 0.001)
            settings["timeout_overflow_mode"] = "throw"
        if max_rows is not None:
            settings.update(max_result_rows=int(max_rows), result_overflow_mode="break")
        zone = None
        if timezone is not None:
            if not _TZ_RE.fullmatch(timezone):
                raise QueryError(f"invalid time zone {timezone!r}")
            try:
                from zoneinfo import ZoneInfo

                zone = ZoneInfo(timezone)
            except (ValueError, KeyError, OSError):
                raise QueryError(f"invalid time zone {timezone!r}") from None
        sql, bound = bind(sql, params)
        try:
            table = self.t.query_arrow(sql, bound, settings)
        except Exception as exc:  # noqa: BLE001
            msg = str(exc)
            if "TIMEOUT_EXCEEDED" in msg or "Timeout exceeded" in msg:
                raise QueryTimeout(float(timeout_s or 0)) from None
            raise QueryError(_message(exc)) from None
        rows = _rows(table)
        if max_rows is not None:
            rows = rows[:max_rows]
        if zone is not None and timezone not in ("UTC", "Etc/UTC"):
            rows = [tuple(v.astimezone(zone) if isinstance(v, datetime) and v.tzinfo is not None else v
                          for v in row) for row in rows]
        return QueryResult(list(table.column_names), rows, [_type_name(f.type) for f in table.schema])

    def stream(self, sql: str, params: dict[str, Any] | None = None,
               batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        sql, bound = bind(sql, params)
        table = _normalize_table(self.t.query_arrow(sql, bound))
        yield from table.to_batches(max_chunksize=batch_rows)

    # -- persons maintenance and retention (sightline.persons.admin, sightline.ops.prune) ----------
    # ClickHouse deletes with mutations: ``ALTER TABLE … DELETE`` rewrites the parts that hold
    # matching rows (the bytes are gone once it finishes; ``mutations_sync = 2`` waits for that on
    # every replica). Callers hold the writer (``Writer.run_exclusive``), so nothing is inserted
    # meanwhile. Not atomic across tables: a failure part-way leaves the remaining tables for a
    # retry, which is idempotent.

    _SYNC = {"mutations_sync": 2}

    def _mutate(self, table: str, where: str, params: dict[str, Any]) -> None:
        sql, bound = bind(f"ALTER TABLE {table}{self._on_cluster()} DELETE WHERE {where}", params)
        self.t.command(sql, bound, self._SYNC)

    def _on_cluster(self) -> str:
        return f" ON CLUSTER `{self.cluster}`" if self.cluster else ""

    def _count(self, sql: str, params: dict[str, Any]) -> int:
        sql, bound = bind(sql, params)
        return int(_rows(self.t.query_arrow(sql, bound))[0][0] or 0)

    def delete_person_data(self, project_id: int, person_ids: list[str], distinct_ids: list[str],
                           with_events: bool) -> dict[str, int]:
        """Remove persons (every version), their distinct ids, overrides, merge-log rows, ingestion
        warnings and (``with_events``) events, each with a synchronous ``ALTER TABLE … DELETE``."""
        if self.read_only:
            raise InvalidInput("This store was opened read-only.", code="read_only")
        p = {"project": int(project_id), "pids": [str(x) for x in person_ids] or [""],
             "dids": [str(x) for x in distinct_ids] or [""],
             "quoted": [orjson.dumps(str(x)).decode() for x in [*distinct_ids, *person_ids]] or ["\"\""]}
        tables = {
            "events": "project_id = $project AND (has($dids, distinct_id) OR has($pids, toString(person_id)))",
            "persons_data": "project_id = $project AND has($pids, toString(id))",
            "person_distinct_ids_data": ("project_id = $project AND (has($dids, distinct_id) "
                                         "OR has($pids, toString(person_id)))"),
            "person_overrides_data": ("project_id = $project AND (has($pids, toString(old_person_id)) "
                                      "OR has($pids, toString(override_person_id)))"),
            "person_merges": ("project_id = $project AND (has($pids, toString(source_person_id)) "
                              "OR has($pids, toString(target_person_id)) "
                              "OR hasAny(JSONExtract(source_distinct_ids, 'Array(String)'), $dids))"),
            "ingestion_warnings": "project_id = $project AND arrayExists(x -> position(details, x) > 0, $quoted)",
        }
        counted = {"persons": "SELECT count() FROM persons WHERE project_id = $project AND has($pids, toString(id))",
                   "distinct_ids": ("SELECT count() FROM person_distinct_ids WHERE project_id = $project AND "
                                    "(has($dids, distinct_id) OR has($pids, toString(person_id)))"),
                   "overrides": ("SELECT count() FROM person_overrides WHERE project_id = $project AND "
                                 "(has($pids, toString(old_person_id)) OR has($pids, toString(override_person_id)))"),
                   "merges": f"SELECT count() FROM person_merges WHERE {tables['person_merges']}",
                   "warnings": f"SELECT count() FROM ingestion_warnings WHERE {tables['ingestion_warnings']}",
                   "events": f"SELECT count() FROM events WHERE {tables['events']}"}
        counts = {"persons": 0, "distinct_ids": 0, "overrides": 0, "merges": 0, "warnings": 0, "events": 0}
        with self._lock:
            for key, sql in counted.items():
                if key == "events" and not with_events:
                    continue
                counts[key] = self._count(sql, p)
            for table, where in tables.items():
                if table == "events" and not with_events:
                    continue
                self._mutate(table, where, p)
        return counts

    def prune_events(self, project_id: int, before: datetime, *, dry_run: bool = False) -> "PruneReport":
        """Delete the project's events with ``timestamp < before``: a month partition that holds
        only this project's events, all older than ``before``, is dropped whole (``DROP
        PARTITION``, instant); the others lose the rows with one synchronous mutation."""
        if before.tzinfo is None:
            before = before.replace(tzinfo=UTC)
        report = PruneReport(project_id=project_id, before=before, dry_run=dry_run)
        p = {"project": int(project_id), "before": before}
        with self._lock:
            report.disk_bytes_before = self.disk_bytes()
            months = _rows(self.t.query_arrow(*bind(
                "SELECT toYYYYMM(timestamp) AS m, countIf(project_id = $project AND timestamp < $before) AS old, "
                "count() AS n FROM events GROUP BY m HAVING old > 0 ORDER BY m", p)))
            whole = [int(m) for m, old, n in months if old == n]
            partial = [(int(m), int(old)) for m, old, n in months if old != n]
            report.events = sum(int(old) for _, old, _ in months)
            report.files_deleted = len(whole)
            report.files_rewritten = len(partial)
            if dry_run or not months:
                report.disk_bytes_after = report.disk_bytes_before
                return report
            for m in whole:
                self.t.command(f"ALTER TABLE events{self._on_cluster()} DROP PARTITION {int(m)}", None, self._SYNC)
            if partial:
                p["months"] = [m for m, _ in partial]
                self._mutate("events", "project_id = $project AND timestamp < $before "
                                       "AND has($months, toYYYYMM(timestamp))", p)
            report.disk_bytes_after = self.disk_bytes()
        return report

    def compact_parts(self, *_args: Any, **_kwargs: Any) -> "CompactReport":
        """Nothing to move: ClickHouse merges parts in the background."""
        return CompactReport()

    def disk_bytes(self) -> int:
        rows = _rows(self.t.query_arrow("SELECT sum(bytes_on_disk) FROM system.parts "
                                        "WHERE database = currentDatabase() AND active"))
        return int(rows[0][0] or 0) if rows else 0

    def person_merge_rows(self, project_id: int, **_kw: Any) -> list[dict[str, Any]]:
        raise InvalidInput("Undoing merges and splitting persons are not available with the ClickHouse store "
                           "yet (the merge log has no ids there); they work with the DuckDB store.",
                           code="not_supported")

    def reassign_events(self, *_a: Any, **_kw: Any) -> int:
        raise InvalidInput("Undoing merges and splitting persons are not available with the ClickHouse store "
                           "yet; they work with the DuckDB store.", code="not_supported")

    def count_events(self) -> int:
        return int(_rows(self.t.query_arrow("SELECT count() FROM events"))[0][0])

    def checkpoint(self) -> None:
        """Nothing to fold in: every insert is a durable part."""

    def close(self) -> None:
        with self._lock:
            self.t.close()


_ARROW_TYPE_NAMES = {"string": "VARCHAR", "large_string": "VARCHAR", "int8": "TINYINT", "int16": "SMALLINT",
                     "int32": "INTEGER", "int64": "BIGINT", "uint8": "UTINYINT", "uint16": "USMALLINT",
                     "uint32": "UINTEGER", "uint64": "UBIGINT", "float": "FLOAT", "double": "DOUBLE",
                     "bool": "BOOLEAN", "date32[day]": "DATE", "binary": "BLOB", "large_binary": "BLOB",
                     "null": '"NULL"'}


def _type_name(t: pa.DataType) -> str:
    """A result column's type in DuckDB's words (what the SQL endpoint reports on both stores)."""
    if isinstance(t, pa.BaseExtensionType):
        return "UUID" if "uuid" in str(t) else _type_name(t.storage_type)
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz in (None, LOCAL_TZ) else "TIMESTAMP WITH TIME ZONE"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_fixed_size_binary(t):
        return "UUID" if t.byte_width == 16 else "BLOB"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _type_name(t.value_type) + "[]"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f"{f.name} {_type_name(f.type)}" for f in t) + ")"
    if pa.types.is_map(t):
        return f"MAP({_type_name(t.key_type)}, {_type_name(t.item_type)})"
    if pa.types.is_dictionary(t):
        return _type_name(t.value_type)
    return _ARROW_TYPE_NAMES.get(str(t), str(t).upper())


def _message(exc: Exception) -> str:
    text = str(exc)
    m = re.search(r"DB::Exception: (.*)", text, re.S)
    text = m.group(1) if m else text
    return _ECHO_RE.sub("", text).strip()[:2000]


# -- opening -------------------------------------------------------------------------------------

def open_clickhouse(url: str, *, read_only: bool = False) -> ClickHouseStorage:
    t = HttpTransport(url)
    return ClickHouseStorage(t, read_only=read_only, cluster=t.cluster)


def open_chdb(data_dir: str | Path, store: str, *, read_only: bool = False) -> ClickHouseStorage:
    """``chdb`` (under the data directory), ``chdb:///abs/path`` or ``chdb:///path?database=name``.

    chdb runs one embedded engine per process. ``SIGHTLINE_CHDB_PATH`` pins that engine's path;
    data directories then get a database each (named after a hash of their path), which is how
    the tests run many stores in one process.
    """
    u = urlparse(store if store.startswith("chdb://") else "chdb://" + store.removeprefix("chdb").lstrip(":"))
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    data_dir = Path(data_dir).resolve()
    shared = os.environ.get("SIGHTLINE_CHDB_PATH")
    if u.path and u.path not in ("", "/"):
        path, database = Path(unquote(u.path)), q.get("database", "sightline")
    elif shared:
        path = Path(shared)
        database = q.get("database") or "sl_" + hashlib.sha1(str(data_dir).encode()).hexdigest()[:16]
    else:
        path, database = data_dir / "chdb", q.get("database", "sightline")
    if not _DB_RE.fullmatch(database):
        raise InvalidInput(f"Invalid ClickHouse database name {database!r}.", code="invalid_store")
    return ClickHouseStorage(ChdbTransport(path, database), read_only=read_only)
