"""The embedded default: one DuckDB file under the data directory.

DuckDB writes each commit to its write-ahead log and syncs it before ``COMMIT`` returns, so a
batch is durable once :meth:`DuckDBStorage.append` returns; after a crash DuckDB replays the
log on open. One connection (the writer's) changes data; readers use their own cursors and
see committed snapshots (MVCC).
"""

from __future__ import annotations

import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import duckdb
import orjson
import pyarrow as pa

from sightline.errors import DataDirLocked, InvalidInput
from sightline.persons.identity import ChangeRows, Changes, Group, IdentityState, Person, change_rows
from sightline.storage.base import QueryError, QueryResult, QueryTimeout
from sightline.storage.duckdb_parts import PartsMixin
from sightline.storage.schema import GROUP_COLUMNS, HOT_PROPERTIES, SCHEMA_VERSION

UTC = timezone.utc

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS events_hot (
    uuid UUID NOT NULL,
    project_id INTEGER NOT NULL,
    event VARCHAR NOT NULL,
    distinct_id VARCHAR NOT NULL,
    person_id UUID NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    session_id VARCHAR,
    window_id VARCHAR,
    properties JSON,
    elements_chain VARCHAR,
    {groups},
    {hot}
)""".format(groups=",\n    ".join(f"{c} VARCHAR" for c in GROUP_COLUMNS),
            hot=",\n    ".join(f"{c} VARCHAR" for c in HOT_PROPERTIES.values()))

OTHER_DDL = [
    """CREATE TABLE IF NOT EXISTS persons (
        id UUID PRIMARY KEY,
        project_id INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        properties JSON NOT NULL,
        properties_meta JSON NOT NULL,
        is_identified BOOLEAN NOT NULL,
        version BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS person_distinct_ids (
        project_id INTEGER NOT NULL,
        distinct_id VARCHAR NOT NULL,
        person_id UUID NOT NULL,
        PRIMARY KEY (project_id, distinct_id)
    )""",
    """CREATE TABLE IF NOT EXISTS person_overrides (
        project_id INTEGER NOT NULL,
        old_person_id UUID NOT NULL,
        override_person_id UUID NOT NULL,
        PRIMARY KEY (project_id, old_person_id)
    )""",
    """CREATE SEQUENCE IF NOT EXISTS person_merge_ids""",
    """CREATE TABLE IF NOT EXISTS person_merges (
        id BIGINT PRIMARY KEY DEFAULT nextval('person_merge_ids'),
        project_id INTEGER NOT NULL,
        merged_at TIMESTAMPTZ NOT NULL,
        source_person_id UUID NOT NULL,
        target_person_id UUID NOT NULL,
        source_distinct_ids JSON NOT NULL,
        source_properties JSON NOT NULL,
        source_is_identified BOOLEAN NOT NULL,
        source_created_at TIMESTAMPTZ NOT NULL,
        reason VARCHAR NOT NULL
    )""",
    # unmerges (sightline.persons.admin): which merge was reverted, restoring which person
    """CREATE SEQUENCE IF NOT EXISTS person_unmerge_ids""",
    """CREATE TABLE IF NOT EXISTS person_unmerges (
        id BIGINT PRIMARY KEY DEFAULT nextval('person_unmerge_ids'),
        project_id INTEGER NOT NULL,
        merge_id BIGINT,
        unmerged_at TIMESTAMPTZ NOT NULL,
        restored_person_id UUID NOT NULL,
        from_person_id UUID NOT NULL,
        distinct_ids JSON NOT NULL,
        events BIGINT NOT NULL,
        actor VARCHAR
    )""",
    """CREATE TABLE IF NOT EXISTS groups (
        project_id INTEGER NOT NULL,
        group_type_index INTEGER NOT NULL,
        group_key VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        properties JSON NOT NULL,
        properties_meta JSON NOT NULL,
        version BIGINT NOT NULL,
        PRIMARY KEY (project_id, group_type_index, group_key)
    )""",
    """CREATE TABLE IF NOT EXISTS group_types (
        project_id INTEGER NOT NULL,
        group_type VARCHAR NOT NULL,
        group_type_index INTEGER NOT NULL,
        PRIMARY KEY (project_id, group_type)
    )""",
    """CREATE TABLE IF NOT EXISTS ingestion_warnings (
        project_id INTEGER NOT NULL,
        type VARCHAR NOT NULL,
        details JSON NOT NULL,
        timestamp TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS sightline_schema (version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ingest_wal (segment BIGINT NOT NULL, "offset" BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS event_parts (
        name VARCHAR PRIMARY KEY,
        rows BIGINT NOT NULL,
        min_timestamp TIMESTAMPTZ,
        max_timestamp TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL
    )""",
]

from sightline.storage.schema import DERIVED_COLUMNS, EVENT_BATCH_SCHEMA  # noqa: E402


def _json_path(prop: str) -> str:
    if not all(c.isalnum() or c in "$_-." for c in prop):
        raise ValueError(f"unsafe property name for a JSON path: {prop!r}")
    return f'$."{prop}"'


_BATCH_COLUMNS = [f.name for f in EVENT_BATCH_SCHEMA]
_DERIVED_LIST = "[" + ", ".join(f"'{_json_path(p)}'" for p in DERIVED_COLUMNS) + "]"
_EVENT_COLUMNS = _BATCH_COLUMNS + list(DERIVED_COLUMNS.values())
# One SELECT turns a columnar batch into stored event rows, deriving the hot columns.
_SELECT_EVENTS = (
    "SELECT {sel} FROM (SELECT *, json_extract_string(properties, {paths}) AS _derived FROM {{src}})").format(
    sel=", ".join([f"CAST({c} AS UUID) AS {c}" if c in ("uuid", "person_id") else c for c in _BATCH_COLUMNS]
                  + [f"_derived[{i + 1}] AS {col}" for i, col in enumerate(DERIVED_COLUMNS.values())]),
    paths=_DERIVED_LIST)
_INSERT_EVENTS = f"INSERT INTO events_hot ({', '.join(_EVENT_COLUMNS)}) " + _SELECT_EVENTS

# DuckDB runs an ASOF join whose left side it *estimates* below 64 rows as a nested loop over
# every pair (quadratic). Estimates through CTEs and semi-joins can be off by orders of
# magnitude (funnels join attempts to steps this way), so always use the sort-merge ASOF join.
QUERY_SETTINGS = "SET GLOBAL asof_loop_join_threshold = 0"

_LOCK_RE = re.compile(r"(Conflicting lock|Could not set lock)", re.I)
_TZ_RE = re.compile(r"[A-Za-z0-9_+\-/]{1,64}")
# DuckDB echoes the statement after "LINE n:"; ``query`` callers get the message only.
_ECHO_RE = re.compile(r"\n+LINE \d+:.*\Z", re.S)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class DuckDBStorage(PartsMixin):
    """Events in a hot table plus time-partitioned Parquet parts (see :mod:`.duckdb_parts`)."""

    dialect = "duckdb"

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if _LOCK_RE.search(str(exc)):
                raise DataDirLocked(
                    f"The data directory {self.path.parent} is in use by another Sightline process "
                    f"(is `sightline serve` running?). Stop it first, or send events to it over "
                    f"HTTP. DuckDB said: {exc}") from None
            raise
        self._lock = threading.Lock()
        # Opt-in cap on the memory of the whole database (DuckDB has no per-query limit; its
        # default is 80% of RAM, and large operators spill to disk beyond the cap). Applies to
        # ingestion too, so keep it generous: e.g. SIGHTLINE_DUCKDB_MEMORY_LIMIT=4GB.
        memory_limit = os.environ.get("SIGHTLINE_DUCKDB_MEMORY_LIMIT")
        if memory_limit:
            self._con.execute("SET memory_limit = ?", [memory_limit])
        self._con.execute(QUERY_SETTINGS)
        if not read_only:
            # Checkpoints rewrite table storage; DuckDB starts one inside a commit whenever its
            # own log passes 16 MB, which at ingestion rates means nearly every flush. Sightline's
            # ingestion log already makes events durable, so let DuckDB's log grow and checkpoint
            # when ingestion is quiet (Writer) or at shutdown.
            self._con.execute("SET checkpoint_threshold = ?",
                              [os.environ.get("SIGHTLINE_DUCKDB_CHECKPOINT_THRESHOLD", "1GB")])
            self._create_schema()

    # -- schema -------------------------------------------------------------------------
    def _create_schema(self) -> None:
        con = self._con
        con.execute("BEGIN")
        con.execute(EVENTS_DDL)
        for ddl in OTHER_DDL:
            con.execute(ddl)
        row = con.execute("SELECT max(version) FROM sightline_schema").fetchone()
        if row[0] is None:
            con.execute("INSERT INTO sightline_schema VALUES (?)", [SCHEMA_VERSION])
        elif row[0] > SCHEMA_VERSION:
            con.execute("ROLLBACK")
            raise InvalidInput(
                f"This data directory uses schema version {row[0]}, newer than this Sightline "
                f"understands ({SCHEMA_VERSION}). Upgrade Sightline to open it.",
                code="schema_too_new")
        self._migrate_parts()
        if row[0] is not None and row[0] < SCHEMA_VERSION:
            con.execute("INSERT INTO sightline_schema VALUES (?)", [SCHEMA_VERSION])
        self._define_events_view()
        con.execute("COMMIT")
        self._remove_orphan_parts()

    def wal_position(self) -> tuple[int, int] | None:
        """Where the ingestion log had been stored up to, as of the last commit."""
        con = self._con.cursor()
        try:
            row = con.execute('SELECT segment, "offset" FROM ingest_wal').fetchone()
        finally:
            con.close()
        return (int(row[0]), int(row[1])) if row else None

    def schema_version(self) -> int:
        return self._con.execute("SELECT max(version) FROM sightline_schema").fetchone()[0]

    # -- the write path ------------------------------------------------------------------
    def append(self, events: pa.Table, changes: Changes | ChangeRows,
               wal_position: tuple[int, int] | None = None, *, serial: bool = False) -> None:
        """Store ``events`` and ``changes`` in one transaction. ``serial``: DuckDB inserts on one
        thread (the writer's live flushes: their parallel insert costs about a fifth more CPU
        and takes the cores the event loop needs while capture is busy). The rows go in as one
        Arrow batch, which DuckDB's Arrow scan hands to one thread; the database's thread
        setting is left alone, so a query running meanwhile keeps its worker threads."""
        con = self._con
        if serial and events.num_rows and events.column(0).num_chunks > 1:
            events = events.combine_chunks()
        with self._lock:
            con.execute("BEGIN")
            try:
                if wal_position is not None:
                    con.execute("DELETE FROM ingest_wal")
                    con.execute("INSERT INTO ingest_wal VALUES (?, ?)", list(wal_position))
                if events.num_rows:
                    con.register("_sl_batch", events)
                    try:
                        con.execute(_INSERT_EVENTS.format(src="_sl_batch"))
                    finally:
                        con.unregister("_sl_batch")
                if changes:
                    self._write_changes(changes)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _write_changes(self, changes: Changes | ChangeRows) -> None:
        ch = changes if isinstance(changes, ChangeRows) else change_rows(changes)
        con = self._con
        ts_type = pa.timestamp("us", tz="UTC")

        def ts(values: list[int]) -> pa.Array:
            return pa.array(values, pa.int64()).cast(ts_type)

        deleted = ch.deleted_persons - set(ch.persons)
        if deleted:
            con.execute("DELETE FROM persons WHERE id IN (SELECT CAST(unnest(?) AS UUID))", [sorted(deleted)])
        if ch.persons:
            ids = list(ch.persons)
            rows = [ch.persons[i] for i in ids]
            tbl = pa.table({
                "id": ids,
                "project_id": pa.array([r[0] for r in rows], pa.int32()),
                "created_at": ts([r[1] for r in rows]),
                "properties": [r[2] for r in rows],
                "properties_meta": [r[3] for r in rows],
                "is_identified": [bool(r[4]) for r in rows],
                "version": pa.array([r[5] for r in rows], pa.int64()),
            })
            self._upsert("persons", tbl, "CAST(id AS UUID), project_id, created_at, properties, "
                         "properties_meta, is_identified, version")
        if ch.distinct_ids:
            items = list(ch.distinct_ids.items())
            tbl = pa.table({
                "project_id": pa.array([k[0] for k, _ in items], pa.int32()),
                "distinct_id": [k[1] for k, _ in items],
                "person_id": [v for _, v in items],
            })
            self._upsert("person_distinct_ids", tbl, "project_id, distinct_id, CAST(person_id AS UUID)")
        if ch.overrides:
            items = list(ch.overrides.items())
            drop = [k for k, v in items if k[1] == v]
            keep = [(k, v) for k, v in items if k[1] != v]
            for project_id, old in drop:
                con.execute("DELETE FROM person_overrides WHERE project_id = ? AND old_person_id = ?",
                            [project_id, old])
            if keep:
                tbl = pa.table({
                    "project_id": pa.array([k[0] for k, _ in keep], pa.int32()),
                    "old_person_id": [k[1] for k, _ in keep],
                    "override_person_id": [v for _, v in keep],
                })
                self._upsert("person_overrides", tbl,
                             "project_id, CAST(old_person_id AS UUID), CAST(override_person_id AS UUID)")
        for m in ch.merges:
            con.execute(
                "INSERT INTO person_merges (project_id, merged_at, source_person_id, target_person_id, "
                "source_distinct_ids, source_properties, source_is_identified, source_created_at, reason) "
                "VALUES (?, make_timestamptz(?), ?, ?, ?, ?, ?, make_timestamptz(?), ?)", list(m))
        if ch.groups:
            keys = list(ch.groups)
            rows = [ch.groups[k] for k in keys]
            tbl = pa.table({
                "project_id": pa.array([k[0] for k in keys], pa.int32()),
                "group_type_index": pa.array([k[1] for k in keys], pa.int32()),
                "group_key": [k[2] for k in keys],
                "created_at": ts([r[0] for r in rows]),
                "properties": [r[1] for r in rows],
                "properties_meta": [r[2] for r in rows],
                "version": pa.array([r[3] for r in rows], pa.int64()),
            })
            self._upsert("groups", tbl, "*")
        for project_id, group_type, index in ch.group_types:
            con.execute("INSERT OR IGNORE INTO group_types VALUES (?, ?, ?)", [project_id, group_type, index])
        if ch.warnings:
            con.executemany("INSERT INTO ingestion_warnings VALUES (?, ?, ?, make_timestamptz(?))",
                            [list(w) for w in ch.warnings])

    def _upsert(self, table: str, rows: pa.Table, select: str) -> None:
        self._con.register("_sl_rows", rows)
        try:
            self._con.execute(f"INSERT OR REPLACE INTO {table} SELECT {select} FROM _sl_rows")
        finally:
            self._con.unregister("_sl_rows")

    # -- loading -------------------------------------------------------------------------
    def load_identity(self, state: IdentityState) -> None:
        con = self._con.cursor()
        try:
            for row in con.execute(
                    "SELECT CAST(id AS VARCHAR), project_id, created_at, properties, properties_meta, "
                    "is_identified, version FROM persons").fetchall():
                meta = orjson.loads(row[4]) if row[4] else {}
                state.add_loaded_person(Person(
                    id=row[0], project_id=row[1], created_at=row[2].astimezone(UTC),
                    properties=orjson.loads(row[3]), properties_ts=meta.get("ts", {}),
                    once_keys=set(meta.get("once", [])), is_identified=row[5], version=row[6]))
            for project_id, did, pid in con.execute(
                    "SELECT project_id, distinct_id, CAST(person_id AS VARCHAR) FROM person_distinct_ids "
                    "ORDER BY rowid").fetchall():
                state.add_loaded_distinct_id(project_id, did, pid)
            for project_id, old, new in con.execute(
                    "SELECT project_id, CAST(old_person_id AS VARCHAR), CAST(override_person_id AS VARCHAR) "
                    "FROM person_overrides").fetchall():
                state.add_loaded_override(project_id, old, new)
            for project_id, group_type, index in con.execute(
                    "SELECT project_id, group_type, group_type_index FROM group_types").fetchall():
                state.group_types.setdefault(project_id, {})[group_type] = index
            for row in con.execute(
                    "SELECT project_id, group_type_index, group_key, created_at, properties, "
                    "properties_meta, version FROM groups").fetchall():
                meta = orjson.loads(row[5]) if row[5] else {}
                state.groups[(row[0], row[1], row[2])] = Group(
                    project_id=row[0], group_type_index=row[1], group_key=row[2],
                    created_at=row[3].astimezone(UTC), properties=orjson.loads(row[4]),
                    properties_ts=meta.get("ts", {}), version=row[6])
        finally:
            con.close()

    def recent_event_uuids(self, since: datetime, limit: int) -> Iterable[tuple[int, str]]:
        con = self._con.cursor()
        try:
            return con.execute(
                "SELECT project_id, CAST(uuid AS VARCHAR) FROM events_hot WHERE created_at >= ? "
                "ORDER BY created_at DESC LIMIT ?", [since, limit]).fetchall()
        finally:
            con.close()

    def existing_uuids(self, project_id: int, uuids: pa.Array, min_ts: datetime | None = None,
                       max_ts: datetime | None = None) -> set[str]:
        con = self._con.cursor()
        try:
            if min_ts is not None and max_ts is not None and not self._may_hold(con, project_id, min_ts, max_ts):
                return set()  # nothing stored overlaps the batch's time range: no scan
            con.register("_sl_uuids", pa.table({"u": uuids}))
            where, params = ["e.project_id = ?"], [project_id]
            if min_ts is not None and max_ts is not None:  # prunes parts and row groups
                where.append("e.timestamp BETWEEN ? AND ?")
                params += [min_ts, max_ts]
            rows = con.execute(
                "SELECT CAST(e.uuid AS VARCHAR) FROM events e "
                "SEMI JOIN (SELECT CAST(u AS UUID) AS u FROM _sl_uuids) c ON e.uuid = c.u "
                f"WHERE {' AND '.join(where)}", params).fetchall()
            return {r[0] for r in rows}
        finally:
            con.close()

    @staticmethod
    def _may_hold(con, project_id: int, min_ts: datetime, max_ts: datetime) -> bool:
        """Whether any hot row or registered part of the project may hold events in the range."""
        if con.execute("SELECT 1 FROM events_hot WHERE project_id = ? AND timestamp BETWEEN ? AND ? LIMIT 1",
                       [project_id, min_ts, max_ts]).fetchall():
            return True
        return bool(con.execute(
            "SELECT 1 FROM event_parts p LEFT JOIN event_part_layout l USING (name) "
            "WHERE (l.project_id = ? OR l.project_id IS NULL) AND (p.min_timestamp IS NULL "
            "OR p.max_timestamp IS NULL OR (p.min_timestamp <= ? AND p.max_timestamp >= ?)) LIMIT 1",
            [project_id, max_ts, min_ts]).fetchall())

    # -- reading -------------------------------------------------------------------------
    def execute(self, sql: str, params: dict[str, Any] | list | None = None) -> QueryResult:
        con = self._con.cursor()
        try:
            cur = con.execute(sql, params or None)
            columns = [d[0] for d in cur.description] if cur.description else []
            return QueryResult(columns, cur.fetchall())
        finally:
            con.close()

    def query(self, sql: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None,
              max_rows: int | None = None, timezone: str | None = None,
              prepare: Callable[[Any, str, dict], tuple[str, dict]] | None = None) -> QueryResult:
        """Untrusted read-only SQL (already validated by the caller): a cursor of its own, a
        read-only transaction, and a timer that interrupts the cursor after ``timeout_s``.
        ``prepare(cursor, sql, params)``, if given, runs first in the same transaction and
        returns the statement to run (it sees the same data: e.g. which part files exist)."""
        con = self._con.cursor()
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        try:
            if timezone is not None:
                if not _TZ_RE.fullmatch(timezone):
                    raise QueryError(f"invalid time zone {timezone!r}")
                try:
                    con.execute("SET SESSION TimeZone = ?", [timezone])
                except duckdb.Error as exc:
                    raise QueryError(f"invalid time zone {timezone!r}: {exc}") from None
            con.execute("BEGIN TRANSACTION READ ONLY")
            if timeout_s is not None:
                def fire() -> None:
                    timed_out.set()
                    con.interrupt()

                timer = threading.Timer(max(float(timeout_s), 0.0), fire)
                timer.daemon = True
                timer.start()
            try:
                if prepare is not None:
                    sql, params = prepare(con, sql, dict(params or {}))
                cur = con.execute(sql, params or None)
                description = cur.description or []
                rows = cur.fetchmany(max_rows) if max_rows is not None else cur.fetchall()
            except duckdb.Error as exc:
                if timed_out.is_set():
                    raise QueryTimeout(float(timeout_s)) from None
                raise QueryError(_ECHO_RE.sub("", str(exc)).strip()) from None
            finally:
                if timer is not None:
                    timer.cancel()
            return QueryResult([d[0] for d in description], rows, [str(d[1]) for d in description])
        finally:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            con.close()

    def stream(self, sql: str, params: dict[str, Any] | list | None = None,
               batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        con = self._con.cursor()
        try:
            reader = con.sql(sql, params=params or None).to_arrow_reader(batch_rows)
            for batch in reader:
                yield batch
        finally:
            con.close()

    # -- persons maintenance: GDPR deletion and unmerge (owned by sightline.persons.admin) ------
    # Callers run these inside ``Writer.run_exclusive`` so nothing else writes meanwhile.

    @staticmethod
    def _event_match(project_id: int, src: str = "") -> str:
        """Events of ``project_id`` that belong to the registered id lists (see _with_id_lists)."""
        q = f"{src}." if src else ""
        return (f"({q}project_id = {int(project_id)} AND ({q}distinct_id IN (SELECT d FROM _sl_gdpr_dids) "
                f"OR CAST({q}person_id AS VARCHAR) IN (SELECT p FROM _sl_gdpr_pids)))")

    @staticmethod
    def _new_person(src: str = "") -> str:
        q = f"{src}." if src else ""
        return (f"CAST(coalesce((SELECT x.n FROM _sl_gdpr_dids x WHERE x.d = {q}distinct_id), "
                f"(SELECT y.n FROM _sl_gdpr_pids y WHERE y.p = CAST({q}person_id AS VARCHAR))) AS UUID)")

    def _reassign_plan(self, project_id: int):
        """Write a copy of every part holding matching events, with their person ids replaced
        (see :meth:`_new_person`); nothing is registered yet. Returns (rows, added, removed)."""
        from sightline.storage.duckdb_parts import _str_literal

        match = self._event_match(project_id)
        rows, added, removed = 0, [], []
        try:
            for f in self.part_files(project_id):
                src = (f"SELECT * FROM read_parquet({_str_literal(str(self.parts_dir / f.name))}, "
                       f"hive_partitioning = false)")
                n = self._con.execute(f"SELECT count(*) FROM ({src}) s WHERE {match}").fetchone()[0]
                if not n:
                    continue
                rows += n
                removed.append(f.name)
                added += self._write_partitions(
                    f"SELECT * REPLACE (CASE WHEN {match} THEN {self._new_person()} ELSE person_id END "
                    f"AS person_id) FROM ({src}) s0")
        except BaseException:
            self._unlink(added)
            raise
        return rows, added, removed

    def _with_id_lists(self, person_ids: dict[str, str | None] | list[str],
                       distinct_ids: dict[str, str | None] | list[str]) -> None:
        """Register the id lists ``_event_match`` reads; mappings give each id a new person id."""
        con = self._con
        pids = person_ids if isinstance(person_ids, dict) else dict.fromkeys(person_ids)
        dids = distinct_ids if isinstance(distinct_ids, dict) else dict.fromkeys(distinct_ids)
        con.register("_sl_gdpr_pids", pa.table({"p": pa.array([str(k) for k in pids], pa.string()),
                                                "n": pa.array(list(pids.values()), pa.string())}))
        con.register("_sl_gdpr_dids", pa.table({"d": pa.array(list(dids), pa.string()),
                                                "n": pa.array(list(dids.values()), pa.string())}))

    def _drop_id_lists(self) -> None:
        for name in ("_sl_gdpr_pids", "_sl_gdpr_dids"):
            try:
                self._con.unregister(name)
            except duckdb.Error:
                pass

    def delete_person_data(self, project_id: int, person_ids: list[str], distinct_ids: list[str],
                           with_events: bool) -> dict[str, int]:
        """Remove persons, their distinct ids, overrides, merge-log rows, ingestion warnings and
        (``with_events``) events, in one transaction; then rewrite the files so that the removed
        bytes are physically gone (Parquet parts are rewritten, the DuckDB file is rebuilt).

        ``person_ids`` should include every id the persons' events may carry (their own ids and
        the ids merged into them); ``distinct_ids`` all their distinct ids."""
        if self.read_only:
            raise InvalidInput("This store was opened read-only.", code="read_only")
        con = self._con
        counts = {"persons": 0, "distinct_ids": 0, "overrides": 0, "merges": 0, "warnings": 0, "events": 0}
        with self._lock:
            self._with_id_lists(person_ids, distinct_ids)
            added: list = []
            removed: list[str] = []
            try:
                if with_events:
                    plan = self._plan_rewrite(self.part_files(project_id), self._event_match(project_id), [])
                    added, removed = plan.added, plan.removed
                p = {"project": project_id}
                in_pids = "CAST({c} AS VARCHAR) IN (SELECT p FROM _sl_gdpr_pids)"
                con.execute("BEGIN")
                try:
                    if with_events:
                        counts["events"] = con.execute(
                            f"DELETE FROM events_hot WHERE {self._event_match(project_id)}").fetchone()[0]
                        counts["events"] += plan.rows
                        self._register(added, removed)
                    counts["persons"] = con.execute(
                        f"DELETE FROM persons WHERE project_id = $project AND {in_pids.format(c='id')}",
                        p).fetchone()[0]
                    counts["distinct_ids"] = con.execute(
                        f"DELETE FROM person_distinct_ids WHERE project_id = $project AND "
                        f"(distinct_id IN (SELECT d FROM _sl_gdpr_dids) OR {in_pids.format(c='person_id')})",
                        p).fetchone()[0]
                    counts["overrides"] = con.execute(
                        f"DELETE FROM person_overrides WHERE project_id = $project AND "
                        f"({in_pids.format(c='old_person_id')} OR {in_pids.format(c='override_person_id')})",
                        p).fetchone()[0]
                    counts["merges"] = con.execute(
                        f"DELETE FROM person_merges WHERE project_id = $project AND "
                        f"({in_pids.format(c='source_person_id')} OR {in_pids.format(c='target_person_id')} "
                        f"OR EXISTS (SELECT 1 FROM _sl_gdpr_dids x WHERE list_contains("
                        f"CAST(source_distinct_ids AS VARCHAR[]), x.d)))", p).fetchone()[0]
                    counts["warnings"] = con.execute(
                        "DELETE FROM ingestion_warnings w WHERE project_id = $project AND EXISTS ("
                        "SELECT 1 FROM (SELECT d AS v FROM _sl_gdpr_dids UNION ALL SELECT p FROM _sl_gdpr_pids) x "
                        "WHERE position(CAST(to_json(x.v) AS VARCHAR) IN CAST(w.details AS VARCHAR)) > 0)",
                        p).fetchone()[0]
                    con.execute(
                        f"DELETE FROM person_unmerges WHERE project_id = $project AND "
                        f"({in_pids.format(c='restored_person_id')} OR {in_pids.format(c='from_person_id')})", p)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    self._unlink(added)
                    raise
            finally:
                self._drop_id_lists()
            self._unlink(removed)
            self._rebuild_file_locked()
        return counts

    def reassign_events(self, project_id: int, by_distinct_id: dict[str, str], by_person_id: dict[str, str],
                        changes: ChangeRows | None = None, unmerge_row: dict | None = None) -> int:
        """Unmerge and split: give the events of each distinct id in ``by_distinct_id`` (else those
        stored with a person id in ``by_person_id``) the mapped person id, in the hot table and the
        Parquet parts, and store ``changes`` (persons, distinct ids, overrides) and the unmerge
        record in the same transaction. Returns the number of events re-pointed."""
        if self.read_only:
            raise InvalidInput("This store was opened read-only.", code="read_only")
        con = self._con
        with self._lock:
            self._with_id_lists(by_person_id, by_distinct_id)
            added: list = []
            removed: list[str] = []
            try:
                moved, added, removed = self._reassign_plan(project_id)
                con.execute("BEGIN")
                try:
                    moved += con.execute(
                        f"UPDATE events_hot SET person_id = {self._new_person('events_hot')} "
                        f"WHERE {self._event_match(project_id, 'events_hot')}").fetchone()[0]
                    self._register(added, removed)
                    if changes:
                        self._write_changes(changes)
                    if unmerge_row is not None:
                        con.execute(
                            "INSERT INTO person_unmerges (project_id, merge_id, unmerged_at, restored_person_id, "
                            "from_person_id, distinct_ids, events, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [project_id, unmerge_row.get("merge_id"), datetime.now(UTC),
                             unmerge_row["restored_person_id"], unmerge_row["from_person_id"],
                             _dumps(unmerge_row["distinct_ids"]), moved, unmerge_row.get("actor")])
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    self._unlink(added)
                    raise
            finally:
                self._drop_id_lists()
            self._unlink(removed)
        return moved

    def rebuild_file(self) -> None:
        """Rebuild the database file with only live data (see :meth:`_rebuild_file_locked`)."""
        with self._lock:
            self._rebuild_file_locked()

    def _rebuild_file_locked(self) -> None:
        """DuckDB never overwrites freed space: deleted rows stay readable in the file (in
        free blocks and in the unused tails of rewritten ones) until it is reused. So after a
        deletion the whole database is copied into a fresh file, which replaces the old one.
        Readers running at that moment fail once and may retry."""
        con = self._con
        fresh = self.path.with_name(self.path.name + ".compact")
        for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
            leftover.unlink(missing_ok=True)
        con.execute("CHECKPOINT")
        db = con.execute("SELECT current_database()").fetchone()[0]
        fresh_sql = str(fresh).replace("'", "''")
        con.execute(f"ATTACH '{fresh_sql}' AS _sl_compact")
        try:
            con.execute(f'COPY FROM DATABASE "{db}" TO _sl_compact')
        finally:
            con.execute("DETACH _sl_compact")
        fd = os.open(fresh, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        con.close()
        os.replace(fresh, self.path)
        self.path.with_name(self.path.name + ".wal").unlink(missing_ok=True)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._con = duckdb.connect(str(self.path))
        memory_limit = os.environ.get("SIGHTLINE_DUCKDB_MEMORY_LIMIT")
        if memory_limit:
            self._con.execute("SET memory_limit = ?", [memory_limit])
        self._con.execute(QUERY_SETTINGS)
        self._con.execute("SET checkpoint_threshold = ?",
                          [os.environ.get("SIGHTLINE_DUCKDB_CHECKPOINT_THRESHOLD", "1GB")])

    def person_merge_rows(self, project_id: int, *, merge_id: int | None = None,
                          person_id: str | None = None, distinct_id: str | None = None) -> list[dict[str, Any]]:
        """Merge-log rows (newest first), each with ``undone``: whether an unmerge reverted it."""
        where, params = ["m.project_id = $project"], {"project": project_id}
        if merge_id is not None:
            where.append("m.id = $merge")
            params["merge"] = merge_id
        if person_id is not None:
            where.append("(CAST(m.target_person_id AS VARCHAR) = $person OR CAST(m.source_person_id AS VARCHAR) = $person)")
            params["person"] = str(person_id)
        if distinct_id is not None:
            where.append("list_contains(CAST(m.source_distinct_ids AS VARCHAR[]), $did)")
            params["did"] = distinct_id
        res = self.execute(
            "SELECT m.id, m.merged_at, CAST(m.source_person_id AS VARCHAR), CAST(m.target_person_id AS VARCHAR), "
            "m.source_distinct_ids, m.source_properties, m.source_is_identified, m.source_created_at, m.reason, "
            "(SELECT max(u.unmerged_at) FROM person_unmerges u WHERE u.project_id = m.project_id "
            " AND u.merge_id = m.id) "
            f"FROM person_merges m WHERE {' AND '.join(where)} ORDER BY m.id DESC", params)
        return [{"id": r[0], "merged_at": r[1], "source_person_id": r[2], "target_person_id": r[3],
                 "source_distinct_ids": orjson.loads(r[4]), "source_properties": orjson.loads(r[5]),
                 "source_is_identified": r[6], "source_created_at": r[7], "reason": r[8],
                 "undone": r[9] is not None, "unmerged_at": r[9]} for r in res.rows]

    def checkpoint(self) -> None:
        with self._lock:
            self._con.execute("CHECKPOINT")

    # -- backups (sightline.ops.backup) ------------------------------------------------------
    def snapshot_to(self, dest_dir: Path) -> tuple[list[str], list[str]]:
        """Copy the database file (checkpointed) into ``dest_dir``; returns (file names, names
        of the registered Parquet parts). Call with writes stopped (``Writer.run_exclusive``)."""
        from sightline.storage import duckdb_files

        with self._lock:
            files = duckdb_files.checkpoint_and_copy(self._con, self.path, Path(dest_dir))
            parts = duckdb_files.part_names(self._con)
        return files, parts

    def close(self) -> None:
        with self._lock:
            if not self.read_only:
                try:
                    self._con.execute("CHECKPOINT")
                except duckdb.Error:
                    pass
            self._con.close()
