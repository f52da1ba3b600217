"""Export: a project's events to Parquet or JSON lines, streamed, in constant memory.

The rows are read in time windows of at most ``window_rows`` events (planned from a count per
UTC day), each sorted by (timestamp, uuid) and streamed batch by batch into the output file, so
memory depends on the window and batch sizes, never on how many events are exported. The file
is written under ``<out>.partial`` and renamed when complete.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from sightline.errors import InvalidInput
from sightline.ops.prune import parse_moment

WINDOW_ROWS = 100_000      # at most this many events sorted at once (a single busier day is one window)
BATCH_ROWS = 10_000        # rows per Arrow batch handed to the writer
_DAY_US = 86_400 * 1_000_000

EXPORT_COLUMNS = (
    "CAST(e.uuid AS VARCHAR) AS uuid, e.event, e.distinct_id, "
    "CAST(coalesce(o.override_person_id, e.person_id) AS VARCHAR) AS person_id, e.timestamp, "
    "CAST(e.properties AS VARCHAR) AS properties")
EXPORT_FROM = ("events e LEFT JOIN person_overrides o ON o.project_id = e.project_id "
               "AND o.old_person_id = e.person_id")
EXPORT_SCHEMA = pa.schema([("uuid", pa.string()), ("event", pa.string()), ("distinct_id", pa.string()),
                           ("person_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
                           ("properties", pa.string())])


def _filters(project_id: int, events: Sequence[str], after: datetime | None,
             before: datetime | None) -> tuple[list[str], dict[str, Any]]:
    where = ["e.project_id = $project"]
    params: dict[str, Any] = {"project": project_id}
    if events:
        where.append("e.event IN (SELECT unnest($events))")
        params["events"] = list(events)
    if after is not None:
        where.append("e.timestamp >= $after")
        params["after"] = after
    if before is not None:
        where.append("e.timestamp < $before")
        params["before"] = before
    return where, params


def plan_windows(storage, where: list[str], params: dict[str, Any],
                 window_rows: int = WINDOW_ROWS) -> list[tuple[datetime, datetime]]:
    """Consecutive [start, end) ranges of whole UTC days holding at most ``window_rows`` events
    each (a day with more is a window of its own)."""
    days = storage.execute(
        f"SELECT epoch_us(e.timestamp) // {_DAY_US} AS d, count(*) FROM events e "
        f"WHERE {' AND '.join(where)} GROUP BY 1 ORDER BY 1", params).rows
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    windows: list[tuple[datetime, datetime]] = []
    start = last = None
    n = 0
    for day, count in days:
        if start is not None and n + count > window_rows:
            windows.append((epoch + timedelta(days=start), epoch + timedelta(days=last + 1)))
            start, n = None, 0
        if start is None:
            start = day
        last = day
        n += count
    if start is not None:
        windows.append((epoch + timedelta(days=start), epoch + timedelta(days=last + 1)))
    return windows


def stream_events(core, *, project_id: int | None = None, events: Sequence[str] = (), after: Any = None,
                  before: Any = None, window_rows: int = WINDOW_ROWS,
                  batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The project's events in (timestamp, uuid) order as Arrow batches of ``EXPORT_SCHEMA``."""
    project = core.resolve_project(project_id)
    now = datetime.now(UTC)
    lo = parse_moment(after, name="after", now=now)
    hi = parse_moment(before, name="before", now=now)
    if not core.read_only:
        core.sync()
    where, params = _filters(project.id, events, lo, hi)
    for w0, w1 in plan_windows(core.storage, where, params, window_rows):
        sql = (f"SELECT {EXPORT_COLUMNS} FROM {EXPORT_FROM} WHERE {' AND '.join(where)} "
               f"AND e.timestamp >= $w0 AND e.timestamp < $w1 ORDER BY e.timestamp, e.uuid")
        yield from core.storage.stream(sql, {**params, "w0": w0, "w1": w1}, batch_rows=batch_rows)


def export_events(core, out: Path, *, fmt: str = "parquet", events: Sequence[str] = (), after: Any = None,
                  before: Any = None, project_id: int | None = None, window_rows: int = WINDOW_ROWS,
                  batch_rows: int = BATCH_ROWS) -> int:
    """Write the project's events (optionally only ``events``, at or after ``after``, before
    ``before``: dates, ISO timestamps or relative like ``-7d``) to ``out``; returns the count."""
    if fmt not in ("parquet", "jsonl"):
        raise InvalidInput(f"Unknown export format {fmt!r}: use parquet or jsonl.", code="unknown_format")
    out = Path(out)
    batches = stream_events(core, project_id=project_id, events=events, after=after, before=before,
                            window_rows=window_rows, batch_rows=batch_rows)
    tmp = out.with_name(out.name + ".partial")
    written = 0
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, EXPORT_SCHEMA, compression="zstd") as writer:
                pending: list[pa.RecordBatch] = []
                size = 0
                for batch in batches:  # row groups of about 100k rows
                    pending.append(batch.cast(EXPORT_SCHEMA) if batch.schema != EXPORT_SCHEMA else batch)
                    size += batch.num_rows
                    written += batch.num_rows
                    if size >= 100_000:
                        writer.write_table(pa.Table.from_batches(pending))
                        pending, size = [], 0
                if pending:
                    writer.write_table(pa.Table.from_batches(pending))
        else:
            with open(tmp, "wb") as fh:
                for batch in batches:
                    fh.write(_jsonl(batch))
                    written += batch.num_rows
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return written


def _jsonl(batch: pa.RecordBatch) -> bytes:
    cols = batch.to_pydict()
    lines = []
    for i in range(batch.num_rows):
        lines.append(orjson.dumps({
            "uuid": cols["uuid"][i], "event": cols["event"][i], "distinct_id": cols["distinct_id"][i],
            "person_id": cols["person_id"][i],
            "timestamp": cols["timestamp"][i].astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "properties": orjson.loads(cols["properties"][i] or "{}")}))
    lines.append(b"")
    return b"\n".join(lines)
