"""Bulk import and export: files in, files out, at columnar speed.

Import reads JSON lines, CSV or Parquet into Arrow record batches (a Parquet file's
dictionary-encoded ``properties`` stay dictionary-encoded: per-value work then runs once per
distinct string) and stores them through the writer:

* the importing thread validates each batch with Arrow compute functions (invalid rows are
  counted by reason and never stored) and drops repeated uuids;
* the writer thread drops rows already stored (same project and uuid) or held back, and gives
  chunks of about ``RESOLVE_ROWS`` rows their persons with exactly the capture path's result for
  the chunk in timestamp order: the rows that touch identity (``$identify``, ``$set``, new
  ``$groups`` types, ...) and every row of the distinct ids and persons they touch go through
  the per-event rules, the rest get their person column-wise (see :func:`resolve_persons`);
* with DuckDB, a part-writer thread writes each unit of about ``PART_ROWS`` rows as sorted
  partition files, and one transaction registers them together with the persons the unit
  created or changed (a crash loses whole units; rerunning the import stores them).

Export streams events out of storage batch by batch, so memory stays flat at any size.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter, deque
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
from hashlib import sha1 as _sha1

from sightline.persons.identity import (PERSON_NAMESPACE, Changes, IdentityState, Person, change_rows,
                                         person_uuid)
from sightline.storage.duckdb_parts import _uuid_array
from sightline.storage.schema import EVENT_BATCH_SCHEMA, GROUP_COLUMNS

UTC = timezone.utc
BATCH_ROWS = 250_000
# rows stored together as partition files by an import (the compaction's merged file size),
# or fewer when they hold this many bytes (memory: one such table waits, another is written)
PART_ROWS = 2_000_000
PART_BYTES = 256 * 1024 * 1024
# rows whose persons are resolved together (in time order; a unit of PART_ROWS is resolved in
# a few such chunks, so that the part writer starts early; a file of known size under 8M rows
# uses chunks of an eighth of it, at least BATCH_ROWS)
RESOLVE_ROWS = 1_000_000
# validated batches handed to the writer thread ahead of the one it works on
JOBS_AHEAD = 4
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
            dict_cols = _dictionary_columns(pf)
            if dict_cols:  # keep the file's dictionary: per-value work runs once per distinct value
                pf = pq.ParquetFile(path, read_dictionary=dict_cols)
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


def _dictionary_columns(pf) -> list[str]:
    """``properties`` when the file stores it dictionary-encoded (repetitive payloads, as many
    exporters and generators write them): read as an Arrow dictionary, the validation, the
    person-marker scans and the hot-column extraction run once per distinct string instead of
    once per row, and the part files are written from the dictionary. Detected from the
    metadata: every row group has a dictionary page and its pages hold small indices."""
    meta = pf.metadata
    idx = pf.schema_arrow.get_field_index("properties")
    if idx < 0 or meta.num_row_groups == 0 or not pa.types.is_string(pf.schema_arrow.field(idx).type):
        return []
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        col = rg.column(idx)
        if not col.has_dictionary_page or rg.num_rows == 0:
            return []
        # mostly small indices (a chunk that fell back to plain pages is far bigger); a small
        # row group costs little either way
        if col.total_uncompressed_size > 8 * rg.num_rows and rg.num_rows > 65_536:
            return []
    return ["properties"]


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
def _per_value(col: pa.Array | pa.ChunkedArray, fn) -> pa.Array | pa.ChunkedArray:
    """``fn`` (an element-wise function of a string array) over ``col``, evaluated once per
    distinct value when ``col`` is dictionary-encoded."""
    if isinstance(col, pa.ChunkedArray):
        return pa.chunked_array([_per_value(c, fn) for c in col.chunks])
    if pa.types.is_dictionary(col.type):
        return fn(col.dictionary).take(col.indices)
    return fn(col)


def _flat(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _plain(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A dictionary-encoded string column as plain strings (others unchanged)."""
    return col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col


def _string_column(batch: pa.RecordBatch, name: str, dictionary: bool = False) -> pa.Array | None:
    idx = batch.schema.get_field_index(name)
    if idx < 0:
        return None
    col = batch.column(idx)
    if pa.types.is_dictionary(col.type) and pa.types.is_string(col.type.value_type):
        if dictionary and not col.null_count:
            return col if col.type.index_type == pa.int32() else col.cast(pa.dictionary(pa.int32(), pa.string()))
        col = col.cast(pa.string())
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


def _json_object(props: pa.Array) -> pa.Array:
    """Whether each text is a JSON object (leading white space allowed): a cheap prefix check,
    then DuckDB's parser on the candidates (a malformed payload is a rejected row, never an
    error of the whole import)."""
    looks = pc.match_substring_regex(props, r"^[\s\p{Z}]*\{")  # no trimmed copy
    if not len(props):
        return looks
    con = _duckdb()
    con.register("_sl_props", pa.table({"p": props}))
    try:
        valid = con.sql("SELECT coalesce(json_valid(p), false) AS v FROM _sl_props").to_arrow_table().column(0)
    finally:
        con.unregister("_sl_props")
    return pc.and_kleene(looks, valid.combine_chunks())


_local = threading.local()


def _duckdb():
    """This thread's in-memory DuckDB connection (for JSON functions over Arrow columns;
    connecting costs more than a small query)."""
    con = getattr(_local, "con", None)
    if con is None:
        import duckdb

        con = _local.con = duckdb.connect()
    return con


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
    props = _string_column(batch, "properties", dictionary=True)
    if props is None:
        props = pa.array(["{}"] * n, pa.string())
    if props.null_count:
        props = pc.fill_null(props, "{}")
    uuids = _string_column(batch, "uuid")
    ts, ts_valid = _timestamps(batch, now)

    keep = pa.array([True] * n)
    keep = _reject(summary, pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(event)), 0),
                   "missing_event_name", keep)
    keep = _reject(summary, pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(distinct)), 0),
                   "missing_distinct_id", keep)
    keep = _reject(summary, ts_valid, "invalid_timestamp", keep)
    keep = _reject(summary, _per_value(props, _json_object), "invalid_properties", keep)
    fast_uuids = _uuid_array(uuids) if uuids is not None else None  # all canonical (the usual)
    if uuids is not None and fast_uuids is None:
        ok_uuid = pc.or_kleene(pc.is_null(uuids), pc.match_substring_regex(uuids, UUID_RE))
        keep = _reject(summary, ok_uuid, "invalid_uuid", keep)
    keep = pc.and_kleene(keep, pc.not_equal(event, "$performance_event"))
    if (pc.max(pc.utf8_length(distinct)).as_py() or 0) > MAX_DISTINCT_ID_LENGTH:
        distinct = pc.utf8_slice_codeunits(distinct, 0, MAX_DISTINCT_ID_LENGTH)
    columns = {"event": event, "distinct_id": distinct, "timestamp": ts, "properties": props,
               "uuid": uuids if uuids is not None else pa.nulls(n, pa.string())}
    if fast_uuids is not None:
        columns[UUID16] = fast_uuids
    table = pa.table(columns)
    if not pc.all(keep, skip_nulls=False).as_py():  # filtering copies every column: only if a row goes
        table = table.filter(keep)
    if table.num_rows == 0:
        return None
    if fast_uuids is not None:
        return table
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
    table = table.set_column(table.schema.get_field_index("uuid"), "uuid", col)
    fast_uuids = _uuid_array(col)
    return table if fast_uuids is None else table.append_column(UUID16, fast_uuids)


def _identity_rows(table: pa.Table, markers: bool = True) -> pa.Array:
    """Rows that need the per-event identity rules (``markers``: False when no row's
    properties can mention a marker key)."""
    mask = pc.is_in(table.column("event"), value_set=pa.array(IDENTITY_EVENTS))
    if markers:
        found = _per_value(table.column("properties"),
                           lambda v: pc.match_substring_regex(v, IDENTITY_MARKER_RE))
        mask = pc.or_kleene(mask, found)
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask


def _top_level_groups(props: pa.Array) -> pa.Array:
    """The top-level ``$groups`` value of each JSON text, as JSON text (null when absent)."""
    con = _duckdb()
    con.register("_sl_props", pa.table({"p": props}))
    try:
        return con.sql("""SELECT json_extract(CASE WHEN json_valid(p) THEN p END, '$."$groups"')::VARCHAR AS g
                          FROM _sl_props""") \
            .to_arrow_table().column(0).combine_chunks()
    finally:
        con.unregister("_sl_props")


def _group_columns(table: pa.Table, project_id: int, identity: IdentityState,
                   maybe: bool = True) -> tuple[list[pa.Array | None], pa.Array | None]:
    """``$groups`` of every row as group_0..4 columns, parsing each distinct object once
    (``maybe``: False when no row's properties can mention ``$groups``).

    Only group types the project already has are resolved here; when a row names a new one
    (whose index depends on the order of first sight) or a value this cannot read exactly, the
    second result marks the rows with ``$groups`` for the per-event rules (no columns then)."""
    none = [None] * len(GROUP_COLUMNS)
    if not maybe:
        return none, None
    props = table.column("properties")
    has = _per_value(props, lambda v: pc.match_substring(v, '"$groups"'))
    has = has.combine_chunks() if isinstance(has, pa.ChunkedArray) else has
    if not pc.any(has).as_py():
        return none, None
    found = _per_value(props, _top_level_groups)
    encoded = pc.dictionary_encode(found).combine_chunks()
    known = identity.group_types.get(project_id, {})
    per_index: list[list[str | None]] = [[None] * len(encoded.dictionary) for _ in GROUP_COLUMNS]
    for pos, text in enumerate(encoded.dictionary.to_pylist()):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return none, has
        for group_type, key in value.items() if isinstance(value, dict) else ():
            if key is None or key == "":
                continue
            index = known.get(str(group_type))
            if index is None:
                return none, has
            per_index[index][pos] = key if isinstance(key, str) else str(key)
    return [None if not any(vals) else pa.array(vals, pa.string()).take(encoded.indices)
            for vals in per_index], None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def _epoch_us(ts: datetime) -> int:
    return (ts - _EPOCH) // _ONE_US


def _from_epoch_us(us: int) -> datetime:
    return _EPOCH + us * _ONE_US


def _person_uuids(project_id: int):
    """A faster :func:`~sightline.persons.identity.person_uuid` for one project (the same ids:
    uuid5 of ``"<project>:<distinct_id>"``), hashing the common prefix once."""
    base = _sha1(PERSON_NAMESPACE.bytes + f"{project_id}:".encode())
    variant = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}

    def person_id(distinct_id: str) -> str:
        h = base.copy()
        h.update(distinct_id.encode())
        d = h.hexdigest()
        return f"{d[:8]}-{d[8:12]}-5{d[13:16]}-{variant[d[16]]}{d[17:20]}-{d[20:32]}"

    return person_id


# hidden columns of the import's batches: uuid and person_id as Arrow UUIDs (16 bytes),
# what the part files store (computed once, by the thread with the least to do)
UUID16 = "_sl_uuid16"
PERSON16 = "_sl_person16"

# properties_meta of a person nothing has set yet (what change_rows writes for one)
NEW_PERSON_META = '{"ts":{},"once":[]}'


@dataclass
class _Resolver:
    """The person resolution of one import (used by the writer thread only).

    ``known`` remembers, for distinct ids that only plain rows have touched in this import,
    their person and its ``created_at`` (an upper bound: it only decreases), in a private
    DuckDB table: a later batch's rows of such an id are matched to it in one join (without
    the GIL) and need no look-up in the identity graph unless they are older than the person. With ``bulk``, the persons
    those rows create are not recorded in a :class:`Changes` (whose commit costs a few µs
    each) but column-wise, and stored with the part files that first use them."""

    project_id: int
    bulk: bool = False
    known: Any = None  # DuckDB connection holding table ``known(did, pid, created)``
    changes: Changes = field(default_factory=Changes)  # the per-event rules' since the last unit
    new_ids: list[str] = field(default_factory=list)
    new_dids: list[str] = field(default_factory=list)
    new_created: list[int] = field(default_factory=list)
    last_binary: Any = None  # person ids of the last batch's plain rows as Arrow UUIDs

    def __post_init__(self) -> None:
        import duckdb

        self.known = duckdb.connect()
        self.known.execute("SET preserve_insertion_order = false")
        self.known.execute("CREATE TABLE known (did VARCHAR, pid VARCHAR, created BIGINT)")

    def close(self) -> None:
        self.known.close()

    def forget(self, dids: Iterable[str]) -> None:
        """Distinct ids whose person the per-event rules may have changed: look them up again."""
        dids = sorted(set(dids))
        if dids:
            self.known.execute("DELETE FROM known WHERE did IN (SELECT unnest(?))", [dids])

    def remember(self, dids: list[str], pids: list[str], created: list[int]) -> None:
        """Add ``known`` entries (for ids it does not have: :meth:`forget` them first)."""
        if not dids:
            return
        self.known.register("_sl_remember", pa.table({"did": pa.array(dids, pa.string()),
                                                      "pid": pa.array(pids, pa.string()),
                                                      "created": pa.array(created, pa.int64())}))
        try:
            self.known.execute("INSERT INTO known SELECT did, pid, created FROM _sl_remember")
        finally:
            self.known.unregister("_sl_remember")

    def new_persons(self) -> pa.Table | None:
        """The persons created column-wise since the last call (id, distinct_id, created µs)."""
        if not self.new_ids:
            return None
        table = pa.table({"project_id": pa.repeat(pa.scalar(self.project_id, pa.int32()), len(self.new_ids)),
                          "id": pa.array(self.new_ids, pa.string()),
                          "distinct_id": pa.array(self.new_dids, pa.string()),
                          "created_at": pa.array(self.new_created, pa.int64()).cast(pa.timestamp("us", tz="UTC"))})
        self.new_ids, self.new_dids, self.new_created = [], [], []
        return table


def _sequential(table: pa.Table, rows: list[int], project_id: int, identity: IdentityState,
                changes: Changes, now: datetime, person_ids: dict[int, str],
                groups: list[dict[int, str]]) -> None:
    """The per-event rules for ``rows`` (indices into ``table``, in time order), exactly as the
    capture path applies them (:meth:`IdentityState.process_batch`)."""
    sub = table.take(rows)
    cols = {name: _plain(sub.column(name)).to_pylist()
            for name in ("event", "distinct_id", "timestamp", "properties", "uuid")}
    events = []
    for j, row in enumerate(rows):
        ev = None
        try:
            raw = {"event": cols["event"][j], "distinct_id": cols["distinct_id"][j],
                   "uuid": cols["uuid"][j], "properties": orjson.loads(cols["properties"][j])}
            ev = normalize_event(raw, now=now, sent_at=None)
        except (InvalidInput, orjson.JSONDecodeError):
            ev = None
        if ev is None:  # cannot happen for rows prepare_batch kept; be safe anyway
            events.append((row, None))
            continue
        ev.timestamp = cols["timestamp"][j]
        events.append((row, ev))
    # process_batch in runs between the (impossible) fallbacks, keeping the order
    run: list = []
    for row, ev in events + [(None, None)]:
        if ev is not None:
            run.append((row, ev))
            continue
        if run:
            identity.process_batch(project_id, [e for _, e in run], changes)
            for r, e in run:
                person_ids[r] = e.person_id
                for gi, key in e.groups.items():
                    groups[gi][r] = key
            run = []
        if row is not None:
            j = rows.index(row)
            person_ids[row] = identity.get_or_create(project_id, cols["distinct_id"][j],
                                                     cols["timestamp"][j], changes).id


def _mentioned_ids(table: pa.Table, rows: list[int]) -> set[str]:
    """Every distinct id the rows ``rows`` may join or move: their own, ``$anon_distinct_id``
    and ``alias`` (as the identity rules read them)."""
    sub = table.take(rows)
    out = set(_plain(sub.column("distinct_id")).to_pylist())
    for text in _plain(sub.column("properties")).to_pylist():
        try:
            props = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(props, dict):
            continue
        for key in ("$anon_distinct_id", "alias"):
            value = props.get(key)
            if value is not None:
                out.add(value if isinstance(value, str) else str(value))
    out.discard(None)
    return out


def resolve_persons(table: pa.Table, resolver: _Resolver, identity: IdentityState, changes: Changes,
                    now: datetime) -> pa.Table:
    """Runs in the writer thread: person ids and groups for a validated batch.

    The result is exactly that of the capture path given the batch's events in time order
    (ties in file order): rows that change identity or person properties, and every row of the
    distinct ids and persons those touch, go through the per-event rules in that order; every
    other row's person depends on its distinct id alone (unaffected by the others), so those
    are resolved column-wise, one look-up per distinct id and batch (none at all for an id an
    earlier batch resolved), and a new distinct id gets a new person created at its earliest
    row (what processing its rows in time order gives).

    Assumes the import is the only writer of identity while it runs (``sightline import`` owns
    its data directory): the distinct ids it resolved are not looked up again unless its own
    per-event rows touch them.
    """
    n = table.num_rows
    project_id = resolver.project_id
    person_ids: dict[int, str] = {}
    groups: list[dict[int, str]] = [{} for _ in GROUP_COLUMNS]
    props = table.column("properties")
    markers = pc.any(_per_value(props, lambda v: pc.match_substring_regex(v, ANY_MARKER_RE))).as_py() \
        if n else False
    special = _identity_rows(table, bool(markers))
    group_cols, group_rows = _group_columns(table, project_id, identity, bool(markers))
    if group_rows is not None:
        special = _flat(pc.or_kleene(special, group_rows))
    involved = special
    if pc.any(special).as_py():
        mentioned = _mentioned_ids(table, pc.indices_nonzero(special).to_pylist())
        pids = set()
        for did in mentioned:
            pid = identity.distinct_ids.get((project_id, did))
            if pid is not None:
                pids.add(pid)
            pids.add(person_uuid(project_id, did))
        ids = set(mentioned)
        for pid in pids:
            person = identity.persons.get(pid)
            if person is not None:
                ids.update(person.distinct_ids)
        involved = _flat(pc.or_kleene(special, pc.is_in(table.column("distinct_id"),
                                                        value_set=pa.array(sorted(ids), pa.string()))))
        rows = pc.indices_nonzero(involved)
        rows = rows.take(pc.sort_indices(table.column("timestamp").take(rows)))  # stable: ties in file order
        _sequential(table, rows.to_pylist(), project_id, identity, changes, now, person_ids, groups)
        for pid in pids | set(person_ids.values()):  # whatever these touched is looked up again later
            person = identity.persons.get(pid)
            if person is not None:
                ids.update(person.distinct_ids)
        resolver.forget(ids)
    resolver.last_binary = None
    pids_col = _plain_persons(table, pc.invert(involved), resolver, identity, changes)
    if person_ids:
        in_order = pc.indices_nonzero(involved).to_pylist()
        pids_col = pc.replace_with_mask(pids_col, involved, pa.array([person_ids[i] for i in in_order], pa.string()))
    group_arrays = []
    for vector, sparse in zip(group_cols, groups):
        base = vector if vector is not None else pa.nulls(n, pa.string())
        if sparse:  # rows that went through the per-event rules
            rows_ = sorted(sparse)
            mask = pc.is_in(pa.array(range(n), pa.int64()), value_set=pa.array(rows_, pa.int64()))
            base = pc.replace_with_mask(base, mask, pa.array([sparse[r] for r in rows_], pa.string()))
        group_arrays.append(base)
    props_col = table.column("properties")
    if not resolver.bulk:
        props_col = _plain(props_col)
    columns = {
        "uuid": table.column("uuid"),
        "project_id": pa.repeat(pa.scalar(project_id, pa.int32()), n),
        "event": table.column("event"),
        "distinct_id": table.column("distinct_id"),
        "person_id": pids_col,
        "timestamp": table.column("timestamp"),
        "created_at": (table.column("created_at") if "created_at" in table.column_names
                       else pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), n)),
        "properties": props_col,
        **{col: group_arrays[i] for i, col in enumerate(GROUP_COLUMNS)},
    }
    schema = EVENT_BATCH_SCHEMA
    if props_col.type != pa.string():
        schema = schema.set(schema.get_field_index("properties"), pa.field("properties", props_col.type))
    if resolver.bulk:  # the part writer's binary uuids, converted here (the writer thread has time)
        extra = {UUID16: table.column(UUID16) if UUID16 in table.column_names else _uuid_array(columns["uuid"]),
                 PERSON16: resolver.last_binary if resolver.last_binary is not None and not person_ids
                 else _uuid_array(pids_col)}
        for name, col in extra.items():
            if col is not None:
                columns[name] = col
                schema = schema.append(pa.field(name, col.type))
    return pa.table(columns, schema=schema)


def _plain_persons(table: pa.Table, plain_mask: pa.Array, resolver: _Resolver, identity: IdentityState,
                   changes: Changes) -> pa.Array:
    """Person ids of the rows in ``plain_mask`` (nulls elsewhere): the person of each distinct
    id, created at its earliest row when new (or made that old when it is younger)."""
    n = table.num_rows
    project_id = resolver.project_id
    if not pc.any(plain_mask).as_py():
        return pa.nulls(n, pa.string())
    all_plain = pc.all(plain_mask).as_py()
    plain = table.select(["distinct_id", "timestamp"])
    if not all_plain:
        plain = plain.filter(plain_mask)
    con = resolver.known
    con.register("_sl_plain", plain)
    try:
        joined = con.sql("SELECT f.did, f.tmin, k.pid, k.created FROM (SELECT distinct_id AS did, "
                         "epoch_us(min(timestamp)) AS tmin FROM _sl_plain GROUP BY distinct_id) f "
                         "LEFT JOIN known k ON k.did = f.did").to_arrow_table()
    finally:
        con.unregister("_sl_plain")
    joined = joined.combine_chunks()
    values = joined.column("pid")
    attention = _flat(pc.or_kleene(pc.is_null(values), pc.less(joined.column("tmin"), joined.column("created"))))
    attention = pc.fill_null(attention, True)
    if pc.any(attention).as_py():
        todo = joined.filter(attention)
        dids = todo.column("did").to_pylist()
        tmin_us = todo.column("tmin").to_pylist()
        before = todo.column("pid").to_pylist()
        found: list[str] = []
        created_us: list[int] = []
        again: list[str] = []  # ids ``known`` had already (made older here)
        id_map, persons = identity.distinct_ids, identity.persons
        lookup = id_map.get
        bulk = resolver.bulk
        derive = _person_uuids(project_id)
        new_ids, new_dids, new_created = resolver.new_ids, resolver.new_dids, resolver.new_created
        for did, t, old in zip(dids, tmin_us, before):
            pid = lookup((project_id, did))
            if pid is None and bulk:
                pid = derive(did)
                if pid not in persons:  # a new person (what get_or_create does), recorded column-wise
                    persons[pid] = Person(pid, project_id, _from_epoch_us(t), {}, {}, set(), False, 0, [did])
                    id_map[(project_id, did)] = pid
                    new_ids.append(pid)
                    new_dids.append(did)
                    new_created.append(t)
                    found.append(pid)
                    created_us.append(t)
                    continue
            person = persons.get(pid) if pid is not None else None
            if person is None:
                person = identity.get_or_create(project_id, did, _from_epoch_us(t), changes)
            created = _epoch_us(person.created_at)
            if t < created:  # what the row would do in process_batch
                person.created_at = _from_epoch_us(t)
                person.version += 1
                changes.touch(person)
                created = t
            found.append(person.id)
            created_us.append(created)
            if old is not None:
                again.append(did)
        resolver.forget(again)
        resolver.remember(dids, found, created_us)
        values = pc.replace_with_mask(values, attention, pa.array(found, pa.string()))
    idx = _flat(pc.index_in(table.column("distinct_id"), value_set=joined.column("did")))
    out = values.take(idx)
    if not all_plain:
        return pc.if_else(plain_mask, out, pa.nulls(n, pa.string()))
    if resolver.bulk:  # the 16-byte ids too: converting the distinct values is enough
        binary = _uuid_array(values)
        if binary is not None:
            resolver.last_binary = pa.ExtensionArray.from_storage(pa.uuid(), binary.storage.take(idx))
    return out


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
def _dedup_within(table: pa.Table) -> pa.Table:
    """Keep the first row of each uuid (idempotent: the importing thread runs it early)."""
    if UUID16 in table.column_names:  # 16 bytes hash faster than 36 characters
        col = table.column(UUID16)
        keys = pa.chunked_array([c.storage for c in col.chunks], pa.binary(16))
    else:
        keys = table.column("uuid")
    if len(pc.unique(keys)) != table.num_rows:  # (faster than count_distinct)
        first: dict[str, int] = {}
        for i, u in enumerate(table.column("uuid").to_pylist()):
            first.setdefault(u, i)
        table = table.take(sorted(first.values()))
    return table


def _dedup(table: pa.Table, storage, project_id: int, pending: Sequence[pa.Table] = (),
           within_done: bool = False) -> pa.Table:
    """Drop rows whose uuid repeats inside the batch, in ``pending`` (resolved batches not
    stored yet) or is already stored. Like the store's check, a pending batch only counts when
    its time range overlaps the batch's (time-ordered files: only neighbours are compared)."""
    if not within_done:
        table = _dedup_within(table)
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


@dataclass
class _Unit:
    """Resolved rows stored together (about ``PART_ROWS``), with the person changes they need:
    one transaction registers the unit's part files and commits those persons."""

    table: pa.Table
    changes: Any  # ChangeRows (frozen in the writer thread)
    new_persons: pa.Table | None


class _PartWriter:
    """Stores units as partition files in a thread of its own, while the writer thread
    resolves the next batches' persons: writing the files (the Arrow sort, DuckDB deriving the
    hot columns, the Parquet writer) runs mostly without the GIL. Each unit's files are
    registered, with its persons, by a job in the writer thread, so every change to the store
    stays ordered by the writer. At most one unit waits while another is being written."""

    def __init__(self, core) -> None:
        import queue
        import threading

        self.core = core
        self.stored = 0
        self.unstored: list[pa.Table] = []  # handed over, not registered yet (for dedup)
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._pending: list = []  # registration jobs submitted to the writer
        self._register_failed = False  # (a failed write of a later unit keeps the earlier ones)
        self._thread = threading.Thread(target=self._run, name="sightline-import-parts", daemon=True)
        self._thread.start()

    def put(self, unit: _Unit) -> None:
        """Queue ``unit`` (blocks while another one waits); its rows stay in :attr:`unstored`
        until registered."""
        if self.error is not None:
            raise self.error
        slim = unit.table.select(["uuid", "timestamp"])  # all dedup needs: the rest can go once written
        self.unstored.append(slim)
        self._queue.put((unit, slim))

    def _run(self) -> None:
        storage, writer = self.core.storage, self.core.writer
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                self.unstored.remove(item[1])
                continue  # drain: the import has failed
            unit, slim = item
            del item
            rows = unit.table.num_rows
            try:
                table, unit.table = unit.table, None
                added = storage.write_import_part_files(table) if rows else []
                del table  # the only reference: freed once written

                def register(_identity, _changes, added=added, slim=slim, unit=unit, rows=rows) -> pa.Table:
                    if self._register_failed:  # an earlier unit's persons are not stored
                        storage.discard_part_files(added)
                        return slim.slice(0, 0)
                    storage.register_import_unit(added, unit.changes, unit.new_persons)
                    self.unstored.remove(slim)
                    self.stored += rows
                    return slim.slice(0, 0)

                # registered by the writer thread in order; meanwhile this thread writes the
                # next unit's files (waiting here left it idle while the writer thread finished
                # resolving the next batches' persons)
                future = writer.submit_job(register)
                future.add_done_callback(lambda f, added=added: self._registered(f, added))
                self._pending.append(future)
            except BaseException as exc:  # reported to the importing thread
                self.error = exc

    def _registered(self, future, added: list) -> None:
        """(In the writer thread, before its next job.) A failed registration: its files go,
        and every unit queued after it is dropped by its own job."""
        exc = future.exception()
        if exc is None:
            return
        self._register_failed = True
        self.core.storage.discard_part_files(added)
        if self.error is None:
            self.error = exc

    def close(self) -> int:
        """Wait until everything put is stored; returns the rows stored (raises the first error)."""
        self._queue.put(None)
        self._thread.join()
        for future in self._pending:
            try:
                future.result()
            except BaseException:  # noqa: BLE001, S110 - kept in self.error by _registered
                pass
        if self.error is not None:
            raise self.error
        return self.stored


_EMPTY = pa.table({"uuid": pa.array([], pa.string())})


class _ReloadIdentity(Exception):
    pass


def _reload_identity(core) -> None:
    """Drop the writer's in-memory identity changes no transaction stored (a failed import)."""
    def fail(_identity):
        raise _ReloadIdentity()

    try:
        core.writer.run_exclusive(fail)
    except _ReloadIdentity:
        pass


def import_batches(core, batches: Iterable[pa.RecordBatch | list], *, summary: ImportSummary,
                   project_id: int | None = None, progress=None, total_rows: int | None = None) -> ImportSummary:
    """Validate batches here while the writer thread resolves the previous one (one in flight).

    With a store that writes partition files (DuckDB), resolved batches are held back and
    stored together, about ``PART_ROWS`` rows at a time (a *unit*), by a part writer thread
    (every file is written once, instead of once per batch and again when the import's small
    files are merged). A unit's files and the persons its rows need are committed in one
    transaction, so a crash loses whole units (a rerun of the import stores them: its rows
    are not duplicates yet) and never leaves persons without their events or the reverse.
    """
    project = core.resolve_project(project_id)
    writer = core.writer
    storage = core.storage
    parts = _PartWriter(core) if hasattr(storage, "write_import_part_files") else None
    resolver = _Resolver(project.id, bulk=parts is not None)
    pending: list[pa.Table] = []  # deduplicated, not resolved yet (the writer thread's)
    resolved: list[pa.Table] = []  # resolved, not in a unit yet (the writer thread's)
    units: list[_Unit] = []       # frozen by the writer thread, handed over by this one
    in_flight: deque = deque()
    candidates = loaded = 0
    writer_failed = False  # a job of ours failed in the writer thread
    # smaller chunks for a small file: its persons are resolved while it is still being read
    resolve_rows = RESOLVE_ROWS if not total_rows else min(RESOLVE_ROWS, max(BATCH_ROWS, total_rows // 8))

    def resolve(now: datetime) -> None:
        """In the writer thread: resolve the held-back rows (one chunk, in time order)."""
        if pending:
            table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            pending.clear()
            resolved.append(resolve_persons(table, resolver, writer.identity, resolver.changes, now))

    def freeze(now: datetime) -> None:
        """In the writer thread: resolve what is held back and close the unit."""
        resolve(now)
        table = None
        if resolved:
            table = pa.concat_tables(resolved) if len(resolved) > 1 else resolved[0]
            resolved.clear()
        rows = change_rows(resolver.changes)
        resolver.changes = Changes()
        new = resolver.new_persons()
        if table is None and not rows and new is None:
            return
        if table is None:
            table = pa.table({"uuid": pa.array([], pa.string()), "timestamp": pa.array([], pa.timestamp("us", tz="UTC"))})
        units.append(_Unit(table, rows, new))

    def settle(depth: int = 0) -> None:
        """Wait until at most ``depth`` jobs are in flight; hand over the closed units."""
        nonlocal loaded
        while len(in_flight) > depth:
            stored = in_flight.popleft().result()
            loaded += stored
            summary.loaded += stored
        if writer_failed:  # what the writer thread did after a failed job is not stored
            units.clear()
        while units and parts is not None:
            parts.put(units[0])  # blocks while the part writer is a unit behind
            units.pop(0)  # (after put: a unit is always in one of the lists dedup reads)

    def settle_checked(depth: int = 0) -> None:
        nonlocal writer_failed
        try:
            settle(depth)
        except BaseException:
            writer_failed = True
            raise

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
            candidates += table.num_rows
            table = _dedup_within(table)  # here: the writer thread has more to do

            def job(identity: IdentityState, changes: Changes, table=table, pid=project.id,
                    now=now) -> pa.Table:
                if writer_failed:  # an earlier job failed (the identity was reloaded): skip
                    return _EMPTY
                unstored = (pending + resolved + [u.table for u in list(units)]
                            + (list(parts.unstored) if parts else []))
                with _no_gc():  # many new objects per batch: collections would double the time
                    kept = _dedup(table, storage, pid, unstored, within_done=True)
                    if parts is None:
                        return resolve_persons(kept, resolver, identity, changes, now)
                    if kept.num_rows:
                        created = pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), kept.num_rows)
                        pending.append(kept.append_column("created_at", created))
                    if sum(t.num_rows for t in pending) >= resolve_rows:
                        resolve(now)
                    if (sum(t.num_rows for t in pending + resolved) >= PART_ROWS
                            or sum(t.nbytes for t in pending + resolved) >= PART_BYTES):
                        freeze(now)
                return _EMPTY  # stored with its unit

            settle_checked(depth=JOBS_AHEAD)  # batches wait while the writer thread resolves a chunk
            in_flight.append(writer.submit_job(job))
    finally:
        try:
            settle_checked()
            if parts is not None and parts.error is None and not writer_failed:
                # what was resolved is stored, even when reading a later batch failed
                def last(_identity, _changes) -> pa.Table:
                    with _no_gc():
                        freeze(datetime.now(UTC))
                    return _EMPTY

                writer.run_job(last)
                settle_checked()
        finally:
            while in_flight:  # after a failure: let the jobs already submitted end first
                try:
                    in_flight.popleft().result()
                except BaseException:
                    writer_failed = True
            if parts is not None:
                try:
                    stored = parts.close()
                    loaded += stored
                    summary.loaded += stored
                finally:
                    if writer_failed or parts.error is not None:
                        _reload_identity(core)  # persons of units that were not stored
            resolver.close()  # no job of ours runs any more
    summary.duplicates += candidates - loaded
    tidy = getattr(storage, "compact_parts", None)
    if tidy is not None and summary.loaded:  # merge the units' files into large sorted parts
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
                           progress=bar, total_rows=total)
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
