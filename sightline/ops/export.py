"""Export: a project's events to Parquet or JSON lines, streamed, in constant memory.

The rows are read in time windows of at most ``window_rows`` events (planned from a count per
UTC day), each sorted by (timestamp, uuid) and streamed batch by batch into the output file, so
memory depends on the window and batch sizes, never on how many events are exported. The file
is written under ``<out>.partial`` and renamed when complete.

The same byte stream (:func:`export_chunks`: JSON lines, or Parquet row group by row group) is
what the server sends from ``GET /api/projects/{id}/export/`` (:mod:`sightline.web.export`), and
:func:`download` is the client side: ``sightline export`` writes the stream of the running server
of the data directory, so an export through the server and one from a stopped data directory
give the same file.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from sightline.errors import InvalidInput
from sightline.ops.prune import parse_moment

WINDOW_ROWS = 100_000      # at most this many events sorted at once (a single busier day is one window)
BATCH_ROWS = 10_000        # rows per Arrow batch handed to the writer
ROW_GROUP_ROWS = 100_000   # Parquet row groups of about this many rows
FORMATS = ("parquet", "jsonl")
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
    return _windows(days, window_rows)


def _windows(days: list[tuple[int, int]], window_rows: int) -> list[tuple[datetime, datetime]]:
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


@dataclass
class ExportPlan:
    """What an export will read: the filters, the time windows and how many events they hold
    (counted when planned; events arriving meanwhile may add a few)."""

    project_id: int
    where: list[str]
    params: dict[str, Any]
    windows: list[tuple[datetime, datetime]]
    rows: int


def plan_export(core, *, project_id: int | str | None = None, events: Sequence[str] = (), after: Any = None,
                before: Any = None, window_rows: int = WINDOW_ROWS) -> ExportPlan:
    """Check the arguments (errors are :class:`InvalidInput` / ``NotFound``, raised here, before
    any byte is written) and plan the windows."""
    project = core.resolve_project(project_id)
    now = datetime.now(UTC)
    lo = parse_moment(after, name="after", now=now)
    hi = parse_moment(before, name="before", now=now)
    if not core.read_only:
        core.sync()
    where, params = _filters(project.id, events, lo, hi)
    days = core.storage.execute(
        f"SELECT epoch_us(e.timestamp) // {_DAY_US} AS d, count(*) FROM events e "
        f"WHERE {' AND '.join(where)} GROUP BY 1 ORDER BY 1", params).rows
    windows = _windows(days, window_rows)
    return ExportPlan(project.id, where, params, windows, sum(int(c) for _, c in days))


def plan_batches(core, plan: ExportPlan, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The planned events in (timestamp, uuid) order as Arrow batches of ``EXPORT_SCHEMA``."""
    for w0, w1 in plan.windows:
        sql = (f"SELECT {EXPORT_COLUMNS} FROM {EXPORT_FROM} WHERE {' AND '.join(plan.where)} "
               f"AND e.timestamp >= $w0 AND e.timestamp < $w1 ORDER BY e.timestamp, e.uuid")
        for batch in core.storage.stream(sql, {**plan.params, "w0": w0, "w1": w1}, batch_rows=batch_rows):
            yield batch.cast(EXPORT_SCHEMA) if batch.schema != EXPORT_SCHEMA else batch


def stream_events(core, *, project_id: int | None = None, events: Sequence[str] = (), after: Any = None,
                  before: Any = None, window_rows: int = WINDOW_ROWS,
                  batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The project's events in (timestamp, uuid) order as Arrow batches of ``EXPORT_SCHEMA``."""
    plan = plan_export(core, project_id=project_id, events=events, after=after, before=before,
                       window_rows=window_rows)
    yield from plan_batches(core, plan, batch_rows)


class _Sink:
    """A write-only file object collecting what the Parquet writer writes, drained in chunks."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.closed = False

    def write(self, data) -> int:
        self.buf += data
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def parquet_chunks(batches: Iterator[pa.RecordBatch], counter: list[int] | None = None) -> Iterator[bytes]:
    """A Parquet file (zstd, row groups of about ``ROW_GROUP_ROWS``) as a stream of byte chunks,
    one per row group plus the footer: only one row group is ever held."""
    import pyarrow.parquet as pq

    sink = _Sink()
    writer = pq.ParquetWriter(sink, EXPORT_SCHEMA, compression="zstd")
    try:
        pending: list[pa.RecordBatch] = []
        size = 0
        for batch in batches:
            pending.append(batch)
            size += batch.num_rows
            if counter is not None:
                counter[0] += batch.num_rows
            if size >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending))
                pending, size = [], 0
                yield sink.drain()
        if pending:
            writer.write_table(pa.Table.from_batches(pending))
    finally:
        writer.close()
    yield sink.drain()


def jsonl_chunks(batches: Iterator[pa.RecordBatch], counter: list[int] | None = None) -> Iterator[bytes]:
    for batch in batches:
        if counter is not None:
            counter[0] += batch.num_rows
        yield _jsonl(batch)


def export_chunks(core, plan: ExportPlan, fmt: str, counter: list[int] | None = None,
                  batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    """The export file's bytes, in order; ``counter[0]`` counts the rows as they go."""
    batches = plan_batches(core, plan, batch_rows)
    return parquet_chunks(batches, counter) if fmt == "parquet" else jsonl_chunks(batches, counter)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"Unknown export format {fmt!r}: use parquet or jsonl.", code="unknown_format",
                           attr="format")
    return fmt


def export_events(core, out: Path, *, fmt: str = "parquet", events: Sequence[str] = (), after: Any = None,
                  before: Any = None, project_id: int | None = None, window_rows: int = WINDOW_ROWS,
                  batch_rows: int = BATCH_ROWS) -> int:
    """Write the project's events (optionally only ``events``, at or after ``after``, before
    ``before``: dates, ISO timestamps or relative like ``-7d``) to ``out``; returns the count."""
    check_format(fmt)
    out = Path(out)
    plan = plan_export(core, project_id=project_id, events=events, after=after, before=before,
                       window_rows=window_rows)
    counter = [0]
    _write_atomically(out, export_chunks(core, plan, fmt, counter, batch_rows))
    return counter[0]


def _write_atomically(out: Path, chunks: Iterator[bytes], on_chunk: Callable[[bytes], None] | None = None) -> None:
    tmp = out.with_name(out.name + ".partial")
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)


# -- the client side of GET /api/projects/{id}/export/ ------------------------------------------

ROWS_HEADER = "X-Sightline-Export-Rows"
DOWNLOAD_CHUNK = 1 << 20


def download(handle, out: Path, *, fmt: str = "parquet", events: Sequence[str] = (), after: str | None = None,
             before: str | None = None, project_id: int | None = None,
             progress: Callable[[int, int, int], None] | None = None, timeout: float = 600.0) -> int:
    """Stream the export of the running server ``handle`` (a :class:`~sightline.ops.control.ServerHandle`)
    into ``out`` (written as ``<out>.partial``, renamed when complete); returns the number of
    events. ``progress(rows_so_far, rows_expected, bytes_so_far)`` is called per chunk (rows are
    counted for JSON lines only; 0 for Parquet). A connection cut before the end is an error."""
    from sightline.ops.control import ServerError

    check_format(fmt)
    out = Path(out)
    query: list[tuple[str, str]] = [("format", fmt)] + [("event", e) for e in events]
    query += [(k, v) for k, v in (("after", after), ("before", before)) if v]
    path = f"/api/projects/{'@current' if project_id is None else int(project_id)}/export/"
    url = handle.url.rstrip("/") + path + "?" + urllib.parse.urlencode(query)
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {handle.token}"})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            err = json.loads(body)
            detail, code = err.get("detail") or str(err), err.get("code") or "server_error"
        except ValueError:
            detail, code = body.decode(errors="replace")[:500] or str(exc), "server_error"
        raise ServerError(detail, status=exc.code, code=code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"Could not reach the running server at {handle.url}: {exc}") from None
    expected = int(resp.headers.get(ROWS_HEADER) or 0)
    state = {"rows": 0, "bytes": 0}

    def chunks() -> Iterator[bytes]:
        with resp:
            while True:
                try:
                    chunk = resp.read(DOWNLOAD_CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # e.g. IncompleteRead: cut short
                    raise ServerError(f"The server stopped sending the export before its end: {exc!r}") from None
                if not chunk:
                    return
                yield chunk

    def seen(chunk: bytes) -> None:
        state["bytes"] += len(chunk)
        if fmt == "jsonl":
            state["rows"] += chunk.count(b"\n")
        if progress is not None:
            progress(state["rows"], expected, state["bytes"])

    _write_atomically(out, chunks(), seen)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(out).num_rows
    return state["rows"]


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
