"""Bulk import and export: files in, files out, at columnar speed.

Import reads JSON lines, CSV or Parquet into Arrow record batches and stores them through
the writer in large transactions. Each batch is validated with Arrow compute functions; only
the rows that touch identity (``$identify``, ``$set``, ``$groups``, ...) go through the
per-event person rules, while the rest get their person by distinct_id in one pass over the
batch's unique ids. Rows already stored (same project and uuid) are skipped; invalid rows are
counted by reason and never stored.

Export streams events out of storage batch by batch, so memory stays flat at any size.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sightline.errors import InvalidInput
from sightline.ingest.normalize import (MAX_DISTINCT_ID_LENGTH, normalize_event, parse_timestamp,
                                        uuid7)
from sightline.persons.identity import Changes, IdentityState
from sightline.storage.schema import EVENT_BATCH_SCHEMA, GROUP_COLUMNS

UTC = timezone.utc
BATCH_ROWS = 250_000
# rows stored together as partition files by an import (the compaction's merged file size),
# or fewer when they hold this many bytes (memory: one such table waits, another is written)
PART_ROWS = 2_000_000
PART_BYTES = 256 * 1024 * 1024
UUID_RE = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"

# A row goes through the per-event identity rules if its event is one of these …
IDENTITY_EVENTS = ("$identify", "$create_alias", "$merge_dangerously", "$groupidentify")
# … or its properties mention one of these keys.
IDENTITY_MARKER_RE = r'"\$(set|set_once|unset|process_person_profile)"\s*:'
# One pass of this finds every row either of the above may match (RE2 scans faster than a
# literal substring search here); on most files it matches nothing and both are skipped.
ANY_MARKER_RE = r'"\$(groups|set|set_once|unset|process_person_profile)"'
# Group membership alone needs no per-event rules: it is extracted column-wise.
GROUPS_RE = r'"\$groups"\s*:\s*(?P<groups>\{[^{}]*\})'



@dataclass
class ImportSummary:
    label: str = "import"
    rows_read: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def render(self) -> str:
        rate = self.rows_read / self.seconds if self.seconds else 0.0
        lines = [f"{self.label}: read {self.rows_read:,} rows in {self.seconds:.1f}s ({rate:,.0f} rows/s)",
                 f"  loaded:     {self.loaded:,}",
                 f"  duplicates: {self.duplicates:,} (already stored, skipped)",
                 f"  rejected:   {self.rejected_total:,}"]
        for reason, n in self.rejected.most_common():
            lines.append(f"    {reason}: {n:,}")
        return "\n".join(lines)


# -- readers: every format becomes Arrow batches of event/distinct_id/timestamp/properties/uuid --
def _detect_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"),
                        (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                        (".jsonl.gz", "jsonl"), (".csv.gz", "csv")):
        if name.endswith(suffix):
            return fmt
    raise InvalidInput(f"Cannot tell the format of {path.name}: use --format jsonl|csv|parquet.",
                       code="unknown_format")


def read_batches(path: Path, fmt: str = "auto", batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch | list]:
    """Yield Arrow record batches (Parquet, CSV) or lists of dicts (JSON lines)."""
    fmt = _detect_format(path) if fmt == "auto" else fmt
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput(f"{path.name} is not a readable Parquet file: {exc}", code="invalid_file") from None
        yield from pf.iter_batches(batch_size=batch_rows)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in
                                                    ("event", "distinct_id", "timestamp", "properties", "uuid")})
        try:
            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=64 << 20),
                                   convert_options=convert)
            for batch in reader:
                yield batch
        except pa.ArrowInvalid as exc:
            raise InvalidInput(f"{path.name}: {exc}", code="invalid_file") from None
    elif fmt == "jsonl":
        import gzip

        opener = gzip.open if path.name.endswith(".gz") else open
        rows: list = []
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    rows.append(_BadLine(f"line {lineno}: {exc}"))
                if len(rows) >= batch_rows // 5:
                    yield rows
                    rows = []
        if rows:
            yield rows
    else:
        raise InvalidInput(f"Unknown format {fmt!r}.", code="unknown_format")


@dataclass
class _BadLine:
    detail: str


def count_rows(path: Path, fmt: str = "auto") -> int | None:
    """Rows in the file when that is cheap to know (Parquet metadata), else None."""
    fmt = _detect_format(path) if fmt == "auto" else fmt
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowInvalid, OSError):
            return None
    return None


# -- the columnar path ----------------------------------------------------------------------
def _string_column(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    idx = batch.schema.get_field_index(name)
    if idx < 0:
        return None
    col = batch.column(idx)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    if pa.types.is_struct(col.type) or pa.types.is_map(col.type) or pa.types.is_list(col.type):
        return pa.array([None if v is None else orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()
                         for v in col.to_pylist()], pa.string())
    return pc.cast(col, pa.string())


def _timestamps(batch: pa.RecordBatch, now: datetime) -> tuple[pa.Array, pa.Array]:
    """(timestamps in UTC µs, validity mask). A missing timestamp means now."""
    idx = batch.schema.get_field_index("timestamp")
    target = pa.timestamp("us", tz="UTC")
    if idx < 0:
        return pa.array([now] * batch.num_rows, target), pa.array([True] * batch.num_rows)
    col = batch.column(idx)
    if pa.types.is_timestamp(col.type):
        out = col if col.type.tz else pc.assume_timezone(col, "UTC")
        out = out.cast(target)
    elif pa.types.is_integer(col.type):  # epoch milliseconds
        out = pc.cast(pc.multiply(col.cast(pa.int64()), 1000), pa.timestamp("us")).cast(target)
    else:
        text = col.cast(pa.string())
        try:
            out = pc.cast(text, target)
        except pa.ArrowInvalid:
            try:
                out = pc.assume_timezone(pc.cast(text, pa.timestamp("us")), "UTC")
            except pa.ArrowInvalid:
                parsed = [parse_timestamp(v) for v in text.to_pylist()]
                valid = pa.array([p is not None or v is None for p, v in zip(parsed, text.to_pylist())])
                return pa.array([p or now for p in parsed], target), valid
    valid = pc.invert(pc.is_null(out))
    missing = pc.is_null(col) if idx >= 0 else None
    filled = pc.if_else(pc.is_null(out), pa.scalar(now, target), out)
    return filled, pc.or_kleene(valid, missing)


def _reject(summary: ImportSummary, mask: pa.Array, reason: str, keep: pa.Array) -> pa.Array:
    """Count rows that are still kept and fail ``mask`` under ``reason``; drop them from ``keep``."""
    bad = pc.and_kleene(keep, pc.invert(pc.fill_null(mask, False)))
    n = pc.sum(bad).as_py() or 0
    if n:
        summary.rejected[reason] += n
    return pc.and_kleene(keep, pc.invert(bad))


def prepare_batch(batch: pa.RecordBatch, summary: ImportSummary, now: datetime) -> pa.Table | None:
    """Validate one Arrow batch; returns the valid rows as event/distinct_id/timestamp/properties/uuid."""
    n = batch.num_rows
    event = _string_column(batch, "event")
    distinct = _string_column(batch, "distinct_id")
    if event is None or distinct is None:
        raise InvalidInput("The file needs at least the columns `event` and `distinct_id` "
                           f"(it has: {', '.join(batch.schema.names)}).", code="missing_columns")
    props = _string_column(batch, "properties")
    if props is None:
        props = pa.array(["{}"] * n, pa.string())
    props = pc.fill_null(props, "{}")
    uuids = _string_column(batch, "uuid")
    ts, ts_valid = _timestamps(batch, now)

    keep = pa.array([True] * n)
    keep = _reject(summary, pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(event)), 0),
                   "missing_event_name", keep)
    keep = _reject(summary, pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(distinct)), 0),
                   "missing_distinct_id", keep)
    keep = _reject(summary, ts_valid, "invalid_timestamp", keep)
    keep = _reject(summary, pc.match_substring_regex(props, r"^[\s\p{Z}]*\{"),  # no trimmed copy
                   "invalid_properties", keep)
    if uuids is not None:
        ok_uuid = pc.or_kleene(pc.is_null(uuids), pc.match_substring_regex(uuids, UUID_RE))
        keep = _reject(summary, ok_uuid, "invalid_uuid", keep)
    keep = pc.and_kleene(keep, pc.not_equal(event, "$performance_event"))
    table = pa.table({"event": event, "distinct_id": pc.utf8_slice_codeunits(distinct, 0, MAX_DISTINCT_ID_LENGTH),
                      "timestamp": ts, "properties": props,
                      "uuid": uuids if uuids is not None else pa.nulls(n, pa.string())})
    if not pc.all(keep, skip_nulls=False).as_py():  # filtering copies every column: only if a row goes
        table = table.filter(keep)
    if table.num_rows == 0:
        return None
    # uuids: canonical lowercase with dashes; generate UUIDv7s where missing
    col = table.column("uuid")
    if col.null_count:
        values = col.to_pylist()
        ms = [int(t.timestamp() * 1000) for t in table.column("timestamp").to_pylist()] if col.null_count else []
        values = [v if v is not None else uuid7(ms[i]) for i, v in enumerate(values)]
        col = pa.array(values, pa.string())
    col = pc.utf8_lower(col)
    if not pc.all(pc.equal(pc.utf8_length(col), 36)).as_py():
        col = pa.array([str(__import__("uuid").UUID(v)) for v in col.to_pylist()], pa.string())
    return table.set_column(table.schema.get_field_index("uuid"), "uuid", col)


def _identity_rows(table: pa.Table, markers: bool = True) -> pa.Array:
    """Rows that need the per-event identity rules (``markers``: False when no row's
    properties can mention a marker key)."""
    mask = pc.is_in(table.column("event"), value_set=pa.array(IDENTITY_EVENTS))
    if markers:
        mask = pc.or_kleene(mask, pc.match_substring_regex(table.column("properties"), IDENTITY_MARKER_RE))
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask


def _group_columns(table: pa.Table, project_id: int, identity: IdentityState,
                   changes: Changes, maybe: bool = True) -> list[pa.Array | None]:
    """``$groups`` of every row as group_0..4 columns, parsing each distinct object once
    (``maybe``: False when no row's properties can mention ``$groups``)."""
    props = table.column("properties")
    if not maybe or not pc.any(pc.match_substring(props, '"$groups"')).as_py():
        return [None] * len(GROUP_COLUMNS)
    found = pc.struct_field(pc.extract_regex(props, GROUPS_RE), [0])
    encoded = pc.dictionary_encode(found).combine_chunks()
    per_index: list[list[str | None]] = [[None] * len(encoded.dictionary) for _ in GROUP_COLUMNS]
    for pos, text in enumerate(encoded.dictionary.to_pylist()):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        for group_type, key in value.items() if isinstance(value, dict) else ():
            if key is None or key == "":
                continue
            index = identity.group_type_index(project_id, str(group_type), changes)
            if index is not None:
                per_index[index][pos] = key if isinstance(key, str) else str(key)
    return [None if not any(vals) else pa.array(vals, pa.string()).take(encoded.indices)
            for vals in per_index]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def _epoch_us(ts: datetime) -> int:
    return (ts - _EPOCH) // _ONE_US


def _from_epoch_us(us: int) -> datetime:
    return _EPOCH + us * _ONE_US


def resolve_persons(table: pa.Table, project_id: int, identity: IdentityState, changes: Changes,
                    now: datetime) -> pa.Table:
    """Runs in the writer thread: person ids and groups for a validated batch, in time order."""
    n = table.num_rows
    person_ids: dict[int, str] = {}
    groups: list[dict[int, str]] = [{} for _ in GROUP_COLUMNS]
    markers = bool(pc.any(pc.match_substring_regex(table.column("properties"), ANY_MARKER_RE)).as_py())
    special = _identity_rows(table, markers)
    special_idx = pc.indices_nonzero(special)
    if len(special_idx):  # identity rules apply in time order
        order = pc.sort_indices(table.column("timestamp").take(special_idx))
        special_idx = special_idx.take(order)
    special_idx = special_idx.to_pylist()
    if special_idx:
        sub = table.take(special_idx)
        cols = {name: sub.column(name).to_pylist() for name in ("event", "distinct_id", "timestamp",
                                                                  "properties", "uuid")}
        for j, row in enumerate(special_idx):
            raw = {"event": cols["event"][j], "distinct_id": cols["distinct_id"][j],
                   "uuid": cols["uuid"][j], "properties": orjson.loads(cols["properties"][j])}
            try:
                ev = normalize_event(raw, now=now, sent_at=None)
            except InvalidInput:
                ev = None
            if ev is None:  # cannot happen for rows prepare_batch kept; be safe anyway
                person_ids[row] = identity.get_or_create(project_id, cols["distinct_id"][j],
                                                         cols["timestamp"][j], changes).id
                continue
            ev.timestamp = cols["timestamp"][j]
            identity.process(project_id, ev, changes)
            person_ids[row] = ev.person_id
            for gi, key in ev.groups.items():
                groups[gi][row] = key
    # every other row: the person of its distinct_id (created on first sight)
    plain_mask = pc.invert(special)
    plain = table.filter(plain_mask)
    pids = pa.nulls(n, pa.string())
    if plain.num_rows:
        firsts = plain.group_by("distinct_id", use_threads=False).aggregate([("timestamp", "min")])
        dids = firsts.column("distinct_id").to_pylist()
        tmin = firsts.column("timestamp_min")
        tmin_us = tmin.cast(pa.int64()).to_pylist()  # ints compare far faster than aware datetimes
        lookup, persons = identity.distinct_ids.get, identity.persons
        found: list[str | None] = []
        unknown: list[int] = []
        for i, did in enumerate(dids):
            person = persons.get(lookup((project_id, did)) or "")
            if person is None:
                unknown.append(i)
                found.append(None)
                continue
            found.append(person.id)
            if tmin_us[i] < _epoch_us(person.created_at):
                person.created_at = _from_epoch_us(tmin_us[i])
                changes.touch(person)
        if unknown:  # new distinct ids (or ids whose person needs the full rules): one by one
            for i, ts in zip(unknown, tmin.take(unknown).to_pylist()):
                person = identity.get_or_create(project_id, dids[i], ts, changes)
                if ts < person.created_at:
                    person.created_at = ts
                    changes.touch(person)
                found[i] = person.id
        pids = pa.array(found, pa.string()).take(
            pc.index_in(table.column("distinct_id"), value_set=firsts.column("distinct_id")))
    if special_idx:
        in_order = pc.indices_nonzero(special).to_pylist()
        pids = pc.replace_with_mask(pids, special, pa.array([person_ids[i] for i in in_order], pa.string()))
    group_arrays = []
    for vector, sparse in zip(_group_columns(table, project_id, identity, changes, markers), groups):
        base = vector if vector is not None else pa.nulls(n, pa.string())
        if sparse:  # rows that went through the per-event rules
            rows = sorted(sparse)
            mask = pc.is_in(pa.array(range(n), pa.int64()), value_set=pa.array(rows, pa.int64()))
            base = pc.replace_with_mask(base, mask, pa.array([sparse[r] for r in rows], pa.string()))
        group_arrays.append(base)
    return pa.table({
        "uuid": table.column("uuid"),
        "project_id": pa.repeat(pa.scalar(project_id, pa.int32()), n),
        "event": table.column("event"),
        "distinct_id": table.column("distinct_id"),
        "person_id": pids,
        "timestamp": table.column("timestamp"),
        "created_at": pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), n),
        "properties": table.column("properties"),
        **{col: group_arrays[i] for i, col in enumerate(GROUP_COLUMNS)},
    }, schema=EVENT_BATCH_SCHEMA)


def _jsonl_to_batch(rows: list, summary: ImportSummary) -> pa.RecordBatch | None:
    """Rows of a JSON-lines file into the same columns the other formats give."""
    cols: dict[str, list] = {"event": [], "distinct_id": [], "timestamp": [], "properties": [], "uuid": []}
    for raw in rows:
        if isinstance(raw, _BadLine):
            summary.rejected["invalid_json"] += 1
            continue
        if not isinstance(raw, dict):
            summary.rejected["invalid_event"] += 1
            continue
        props = raw.get("properties")
        if props is not None and not isinstance(props, dict):
            summary.rejected["invalid_properties"] += 1
            continue
        props = dict(props or {})
        for key in ("$set", "$set_once"):
            if isinstance(raw.get(key), dict):
                props[key] = {**props.get(key, {}), **raw[key]}
        did = raw.get("distinct_id", raw.get("$distinct_id", props.get("distinct_id")))
        cols["event"].append(raw.get("event") if isinstance(raw.get("event"), str) else None)
        cols["distinct_id"].append(None if did is None else (did if isinstance(did, str) else orjson.dumps(did).decode()))
        ts = raw.get("timestamp")
        cols["timestamp"].append(ts if isinstance(ts, str) else (ts.isoformat() if isinstance(ts, datetime) else None))
        cols["properties"].append(orjson.dumps(props, option=orjson.OPT_NON_STR_KEYS).decode())
        uid = raw.get("uuid")
        cols["uuid"].append(str(uid) if uid not in (None, "") else None)
    if not cols["event"]:
        return None
    return pa.RecordBatch.from_pydict(cols, schema=pa.schema([(k, pa.string()) for k in cols]))


# -- driving it ------------------------------------------------------------------------------
def _dedup(table: pa.Table, storage, project_id: int, pending: Sequence[pa.Table] = ()) -> pa.Table:
    """Drop rows whose uuid repeats inside the batch, in ``pending`` (resolved batches not
    stored yet) or is already stored. Like the store's check, a pending batch only counts when
    its time range overlaps the batch's (time-ordered files: only neighbours are compared)."""
    if pc.count_distinct(table.column("uuid")).as_py() != table.num_rows:
        first: dict[str, int] = {}
        for i, u in enumerate(table.column("uuid").to_pylist()):
            first.setdefault(u, i)
        table = table.take(sorted(first.values()))
    ts = table.column("timestamp")
    lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
    for earlier in pending:
        if not earlier.num_rows:
            continue
        ets = earlier.column("timestamp")
        if pc.max(ets).as_py() < lo or pc.min(ets).as_py() > hi:
            continue
        seen = pc.is_in(table.column("uuid"), value_set=earlier.column("uuid").combine_chunks())
        if pc.any(seen).as_py():
            table = table.filter(pc.invert(seen))
    if not table.num_rows:
        return table
    existing = storage.existing_uuids(project_id, table.column("uuid").combine_chunks(), lo, hi)
    if existing:
        table = table.filter(pc.invert(pc.is_in(table.column("uuid"), value_set=pa.array(list(existing)))))
    return table


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector (it traverses the whole identity graph each time a
    few thousand objects are allocated); reference counting still frees everything acyclic."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _PartWriter:
    """Stores resolved batches as partition files in a thread of its own, while the writer
    thread resolves the next batches' persons: writing the files (DuckDB deriving the hot
    columns, the Arrow sort, the Parquet writer) runs mostly without the GIL. Each set of
    files is registered by a job in the writer thread, so every change to the store stays
    ordered by the writer. At most one batch waits while another is being written."""

    def __init__(self, core) -> None:
        import queue
        import threading

        self.core = core
        self.stored = 0
        self.unstored: list[pa.Table] = []  # handed over, not registered yet (for dedup)
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="sightline-import-parts", daemon=True)
        self._thread.start()

    def put(self, table: pa.Table) -> None:
        """Queue ``table`` (blocks while another one waits); it stays in :attr:`unstored` until
        registered."""
        if self.error is not None:
            raise self.error
        slim = table.select(["uuid", "timestamp"])  # all dedup needs: the rest can go once written
        self.unstored.append(slim)
        self._queue.put((table, slim))

    def _run(self) -> None:
        storage, writer = self.core.storage, self.core.writer
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                self.unstored.remove(item[1])
                continue  # drain: the import has failed
            box = [item[0]]
            rows, slim = item[0].num_rows, item[1]
            del item
            try:
                added = storage.write_part_files(box.pop())  # the only reference: freed while writing

                def register(_identity, _changes, added=added, slim=slim) -> pa.Table:
                    storage.register_part_files(added)
                    self.unstored.remove(slim)
                    return slim.slice(0, 0)

                try:
                    writer.run_job(register)
                except BaseException:
                    storage.discard_part_files(added)
                    raise
                self.stored += rows
            except BaseException as exc:  # reported to the importing thread
                self.error = exc

    def close(self) -> int:
        """Wait until everything put is stored; returns the rows stored (raises the first error)."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.stored


def import_batches(core, batches: Iterable[pa.RecordBatch | list], *, summary: ImportSummary,
                   project_id: int | None = None, progress=None) -> ImportSummary:
    """Validate batches here while the writer thread resolves the previous one (one in flight).

    With a store that writes partition files (DuckDB), resolved batches are held back and
    stored together, about ``PART_ROWS`` rows at a time, by a part writer thread (every file
    is written once, instead of once per batch and again when the import's small files are
    merged); their persons are committed at once, before the events (a crash in between
    leaves persons whose events a rerun of the import stores).
    """
    project = core.resolve_project(project_id)
    writer = core.writer
    storage = core.storage
    parts = _PartWriter(core) if hasattr(storage, "write_part_files") else None
    pending: list[pa.Table] = []  # resolved, not handed over yet (the writer thread's while a job runs)
    in_flight = None
    candidates = loaded = 0

    def settle() -> None:
        nonlocal in_flight, loaded
        if in_flight is not None:
            future, in_flight = in_flight, None
            stored = future.result()
            loaded += stored
            summary.loaded += stored

    def hand_over() -> None:
        table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
        pending.clear()
        parts.put(table)
        del table

    try:
        for batch in batches:
            if isinstance(batch, list):
                batch = _jsonl_to_batch(batch, summary)
                if batch is None:
                    continue
            summary.rows_read += batch.num_rows
            now = datetime.now(UTC)
            table = prepare_batch(batch, summary, now)
            if progress is not None:
                progress.update(batch.num_rows)
            if table is None:
                continue

            def job(identity: IdentityState, changes: Changes, table=table, pid=project.id,
                    now=now) -> pa.Table:
                unstored = pending + (list(parts.unstored) if parts is not None else [])
                with _no_gc():  # ~100k new objects per batch: collections would double the time
                    resolved = resolve_persons(_dedup(table, storage, pid, unstored), pid, identity, changes, now)
                if parts is None:
                    return resolved
                if resolved.num_rows:
                    pending.append(resolved)
                return resolved.slice(0, 0)  # the persons are committed now, the events later

            settle()  # no job of ours runs now: ``pending`` is this thread's
            if parts is not None and (sum(t.num_rows for t in pending) >= PART_ROWS
                                      or sum(t.nbytes for t in pending) >= PART_BYTES):
                hand_over()  # blocks while the part writer is a batch behind
            candidates += table.num_rows
            in_flight = writer.submit_job(job)
    finally:
        try:
            settle()
        finally:
            if parts is not None:
                if pending and parts.error is None:
                    hand_over()  # what was resolved is stored, even when a later batch failed
                stored = parts.close()
                loaded += stored
                summary.loaded += stored
    summary.duplicates += candidates - loaded
    tidy = getattr(storage, "compact_parts", None)
    if tidy is not None and summary.loaded:  # merge the batches' files into large sorted parts
        writer.run_exclusive(lambda _identity: tidy(hot=False))
    return summary


def import_files(core, paths: Sequence[Path], *, fmt: str = "auto", project_id: int | None = None,
                 progress: bool = True) -> ImportSummary:
    summary = ImportSummary(label="import", files=[str(p) for p in paths])
    started = time.perf_counter()
    for path in paths:
        total = count_rows(path, fmt)
        bar = _progress_bar(progress, total, path.name, unit_size=None if total else path.stat().st_size)
        try:
            import_batches(core, read_batches(path, fmt), summary=summary, project_id=project_id,
                           progress=bar)
        finally:
            if bar is not None:
                bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


def import_events(core, events: Iterable[dict], *, total: int | None = None, progress: bool = True,
                  label: str = "import", project_id: int | None = None,
                  batch_rows: int = 50_000) -> ImportSummary:
    """Import PostHog-shaped event dicts (e.g. from :func:`sightline.demo.generate`)."""
    summary = ImportSummary(label=label)
    started = time.perf_counter()
    bar = _progress_bar(progress, total, label)

    def chunks() -> Iterator[list]:
        chunk: list = []
        for ev in events:
            chunk.append(ev)
            if len(chunk) >= batch_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    try:
        import_batches(core, chunks(), summary=summary, project_id=project_id, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _progress_bar(enabled: bool, total: int | None, desc: str, unit_size: int | None = None):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=" rows", unit_scale=True, mininterval=0.5, leave=False)


# -- export ----------------------------------------------------------------------------------
def export_events(core, out: Path, *, fmt: str = "parquet", events: Sequence[str] = (),
                  after: Any = None, before: Any = None, project_id: int | None = None) -> int:
    """Stream the project's events to ``out``; returns how many were written
    (see :func:`sightline.ops.export.export_events`)."""
    from sightline.ops.export import export_events as export

    return export(core, out, fmt=fmt, events=events, after=after, before=before, project_id=project_id)
