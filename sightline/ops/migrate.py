"""``sightline migrate``: copy a data directory's DuckDB events and persons into ClickHouse.

The copy is resumable and verified:

* the identity tables (persons, distinct ids, overrides, merges, groups, group types,
  ingestion warnings) are copied whole, each marked done in the target's ``migrate_progress``
  table when finished;
* events are copied one UTC month at a time (a partition of the target). Before a month is
  (re)copied, whatever a previous, interrupted run left of it in the target is deleted; after
  it, the target's count for that month must equal the source's, and only then is the month
  marked done. A rerun skips done months. (Migrate into a store nobody writes to meanwhile.)
* at the end the total counts of events and persons must match.

Persons, flags, cohorts and every other definition stay in the data directory's metadata store
(``meta.sqlite``); serve the data directory with ``--store <the target>`` afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pyarrow as pa

from sightline.errors import InvalidInput
from sightline.storage.schema import DERIVED_COLUMNS, EVENT_BATCH_SCHEMA

UTC = timezone.utc
_EVENT_COLUMNS = [f.name for f in EVENT_BATCH_SCHEMA] + list(DERIVED_COLUMNS.values())

# source SELECT (DuckDB) per identity table: UUIDs and JSON as text
IDENTITY_TABLES: dict[str, tuple[str, str]] = {
    # target table: (source SELECT, target column list)
    "persons_data": ("SELECT CAST(id AS VARCHAR) AS id, project_id, created_at, CAST(properties AS VARCHAR) AS properties, "
                     "CAST(properties_meta AS VARCHAR) AS properties_meta, is_identified, version, "
                     "CAST(1 AS BIGINT) AS _v FROM persons", ""),
    "person_distinct_ids_data": ("SELECT project_id, distinct_id, CAST(person_id AS VARCHAR) AS person_id, "
                                 "CAST(row_number() OVER () AS BIGINT) AS version FROM person_distinct_ids", ""),
    "person_overrides_data": ("SELECT project_id, CAST(old_person_id AS VARCHAR) AS old_person_id, "
                              "CAST(override_person_id AS VARCHAR) AS override_person_id, CAST(1 AS BIGINT) AS version "
                              "FROM person_overrides", ""),
    "person_merges": ("SELECT project_id, merged_at, CAST(source_person_id AS VARCHAR) AS source_person_id, "
                      "CAST(target_person_id AS VARCHAR) AS target_person_id, "
                      "CAST(source_distinct_ids AS VARCHAR) AS source_distinct_ids, "
                      "CAST(source_properties AS VARCHAR) AS source_properties, source_is_identified, "
                      "source_created_at, reason FROM person_merges", ""),
    "groups_data": ("SELECT project_id, group_type_index, group_key, created_at, CAST(properties AS VARCHAR) AS properties, "
                    "CAST(properties_meta AS VARCHAR) AS properties_meta, version, CAST(1 AS BIGINT) AS _v FROM groups", ""),
    "group_types": ("SELECT project_id, group_type, group_type_index FROM group_types", ""),
    "ingestion_warnings": ("SELECT project_id, type, CAST(details AS VARCHAR) AS details, timestamp "
                           "FROM ingestion_warnings", ""),
}


@dataclass
class MigrateReport:
    events_source: int = 0
    events_target: int = 0
    persons_source: int = 0
    persons_target: int = 0
    months_copied: int = 0
    months_skipped: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.events_source == self.events_target and self.persons_source == self.persons_target

    def to_json(self) -> dict:
        return {"ok": self.ok, "events": {"source": self.events_source, "target": self.events_target},
                "persons": {"source": self.persons_source, "target": self.persons_target},
                "months_copied": self.months_copied, "months_skipped": self.months_skipped, "tables": self.tables,
                "seconds": round(self.seconds, 2)}


def _done(target, source_key: str) -> set[str]:
    rows = target.execute("SELECT chunk FROM migrate_progress FINAL WHERE source = $s", {"s": source_key}).rows
    return {r[0] for r in rows}


def _mark(target, source_key: str, chunk: str, rows: int) -> None:
    target.t.insert_arrow("migrate_progress", ["source", "chunk", "rows", "version"], pa.table({
        "source": [source_key], "chunk": [chunk], "rows": pa.array([rows], pa.int64()),
        "version": pa.array([time.time_ns()], pa.int64())}))


def migrate(data_dir: str | Path, to: str, *, progress: Callable[[int, str], None] | None = None,
            on_start: Callable[[int], None] | None = None) -> MigrateReport:
    """Copy ``data_dir``'s DuckDB store into the ClickHouse store ``to`` (see the module docs).

    ``on_start(total_events)`` is called once; ``progress(n_events, label)`` after every batch.
    """
    from sightline.storage import open_storage
    from sightline.storage.clickhouse_backend import ClickHouseStorage
    from sightline.storage.duckdb_backend import DuckDBStorage

    started = time.perf_counter()
    data_dir = Path(data_dir)
    src_path = data_dir / "events.duckdb"
    if not src_path.exists():
        raise InvalidInput(f"No DuckDB store at {src_path}: --from must be a Sightline data directory.",
                           attr="from")
    if not to.split(":", 1)[0].lower() in ("clickhouse", "clickhouses", "chdb", "http", "https"):
        raise InvalidInput("--to must be a ClickHouse store: clickhouse://user:pass@host:8123/db or chdb:///path.",
                           attr="to")
    source = DuckDBStorage(src_path, read_only=True)
    target = open_storage(data_dir, store=to)
    assert isinstance(target, ClickHouseStorage)
    source_key = str(src_path.resolve())
    report = MigrateReport()
    try:
        done = _done(target, source_key)
        # 1. identity tables, whole
        for table, (select, _) in IDENTITY_TABLES.items():
            n = source.execute(f"SELECT count(*) FROM ({select})").rows[0][0]
            report.tables[table] = n
            key = f"table:{table}"
            if key in done:
                continue
            if table in ("person_merges", "ingestion_warnings", "group_types"):
                target.t.command(f"TRUNCATE TABLE {table}")  # plain tables: no duplicates on resume
            for batch in source.stream(select):
                if batch.num_rows:
                    target.t.insert_arrow(table, batch.schema.names, pa.Table.from_batches([batch]))
            _mark(target, source_key, key, n)
        # 2. events, one UTC month (one target partition) at a time
        days = source.execute(
            "SELECT CAST(date_trunc('month', timezone('UTC', timestamp)) AS DATE) AS d, count(*) FROM events "
            "GROUP BY 1 ORDER BY 1").rows
        report.events_source = sum(int(n) for _, n in days)
        if on_start:
            on_start(report.events_source)
        cols = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" if c in ("uuid", "person_id", "properties") else c
                         for c in _EVENT_COLUMNS)
        for day, n in days:
            key = f"month:{day.isoformat()[:7]}"
            lo = datetime(day.year, day.month, 1, tzinfo=UTC)
            hi = datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=UTC)
            label = day.isoformat()[:7]
            if key in done:
                report.months_skipped += 1
                if progress:
                    progress(int(n), f"{label} (done earlier)")
                continue
            # whatever an interrupted run left of this month goes first
            left = target.execute("SELECT count() FROM events WHERE timestamp >= $lo AND timestamp < $hi",
                                  {"lo": lo, "hi": hi}).rows[0][0]
            if left:
                target.t.command("DELETE FROM events WHERE timestamp >= {lo:DateTime64(6, 'UTC')} "
                                 "AND timestamp < {hi:DateTime64(6, 'UTC')}", {"lo": lo, "hi": hi})
            for batch in source.stream(f"SELECT {cols} FROM events WHERE timestamp >= $lo AND timestamp < $hi",
                                       {"lo": lo, "hi": hi}, batch_rows=200_000):
                if batch.num_rows:
                    target.insert_event_rows(pa.Table.from_batches([batch]))
                    if progress:
                        progress(batch.num_rows, label)
            got = target.execute("SELECT count() FROM events WHERE timestamp >= $lo AND timestamp < $hi",
                                 {"lo": lo, "hi": hi}).rows[0][0]
            if int(got) != int(n):
                raise InvalidInput(f"Verification failed for {label}: {n} events in the source, {got} in the "
                                   "target. Run the migration again to redo that month.", code="migrate_mismatch")
            _mark(target, source_key, key, int(n))
            report.months_copied += 1
        # 3. verify the totals
        report.events_target = int(target.execute("SELECT count() FROM events").rows[0][0])
        report.persons_source = int(source.execute("SELECT count(*) FROM persons").rows[0][0])
        report.persons_target = int(target.execute("SELECT count() FROM persons").rows[0][0])
    finally:
        source.close()
        target.close()
    report.seconds = time.perf_counter() - started
    return report


# -- the command ------------------------------------------------------------------------------

import click  # noqa: E402


@click.command("migrate")
@click.option("--from", "from_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The data directory whose DuckDB store (events.duckdb) is copied.")
@click.option("--to", "to", required=True, help="The ClickHouse store: clickhouse://user:pass@host:8123/db "
              "(add ?cluster=NAME on a cluster) or chdb:///path (in-process ClickHouse).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def migrate_command(from_dir: Path, to: str, as_json: bool) -> None:
    """Copy events and persons from a data directory's DuckDB store into ClickHouse.

    Resumable (interrupt it and run it again: finished days are skipped, a half-copied day is
    redone) and verified (every day's event count, then the totals of events and persons).
    Flags, cohorts, keys and other definitions stay in the data directory; afterwards run
    `sightline serve --data-dir DIR --store <the same target>`.
    """
    import json
    import sys

    from sightline.errors import SightlineError

    bar = None

    def on_start(total: int) -> None:
        nonlocal bar
        bar = click.progressbar(length=total, label="Copying events", show_pos=True, show_eta=True,
                                file=sys.stderr if as_json else None)
        bar.__enter__()

    def progress(n: int, label: str) -> None:
        if bar is not None:
            bar.label = f"Copying events {label}"
            bar.update(n)

    try:
        report = migrate(from_dir, to, progress=progress, on_start=on_start)
    except SightlineError as exc:
        if bar is not None:
            bar.__exit__(None, None, None)
        click.secho(f"Error: {exc.detail}", fg="red", err=True)
        raise SystemExit(2)
    if bar is not None:
        bar.__exit__(None, None, None)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        click.echo(f"Events: {report.events_source:,} in the source, {report.events_target:,} in the target "
                   f"({report.months_copied} months copied, {report.months_skipped} done earlier).")
        click.echo(f"Persons: {report.persons_source:,} in the source, {report.persons_target:,} in the target.")
        click.echo("Verified: counts match." if report.ok else "MISMATCH: run the migration again.")
        click.echo(f"Took {report.seconds:.1f} s.")
    if not report.ok:
        raise SystemExit(1)
