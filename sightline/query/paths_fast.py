"""Paths without a global sort (DuckDB): edges between the first ``limit`` items of every path
session, from the rows in the order the store already keeps them.

Part files are sorted by ``(event, person_id, timestamp)``, and a scan of the ``events`` view
returns rows in insertion order (hot rows, then each file in turn): per file, each person's
``$pageview`` rows come together and in time order, a *run*. An actor's whole sequence is its
runs one after another, when they do not overlap in time. So instead of sorting ~10M rows:

1. The labels: a superset of the distinct ``(event, $current_url)`` values of the rows read
   (each part file's values are read once per process and cached: files never change; the hot
   rows' are read each time) is labelled by DuckDB with the general query's own expression
   (trailing slash, path cleaning, exclusions), and a few bits of each value's 64-bit hash,
   chosen so that every distinct value has its own, become a *slot*.
2. One scan streams four integer columns per event: the two halves of the stored person uuid,
   the timestamp in µs and the slot. DuckDB reads ahead while numpy does the per-row passes
   on each batch (:func:`_scan`): where runs start, ``sn`` (followed within the session gap
   by the next row: SQL's ``epoch(next) - epoch(ts) < 1800``, doubles included), rows out of
   order inside a run, each row's whole milliseconds (``epoch_us // 1000``) and label code.
3. The *runs* (~1/6 of the rows) are merged by actor (:func:`_walk_batches`): a stable sort of
   their upper uuid halves, with the hot runs (read first, newest) put last; person overrides
   are applied to the runs' ids; each run's last row is linked to the first row of the actor's
   next run, which gives ``sn`` there too. Then the collapse of a duplicate followed within
   the gap by its own label, the session heads, and a walk of at most ``limit - 1`` steps from
   each head counts edges and sums millisecond differences per (step, source, target).

Actors whose rows do not fit the pattern (two runs overlapping in time, e.g. a merged person's
old rows in the same file; rows out of order or at the same instant inside a run, which SQL
orders by uuid; two actors sharing the upper 64 bits) are *problem actors*: their edges come
from the general SQL restricted to them. All statements run in one read-only transaction, so
they see the same data. Counts and sums add up; the average is ``sum / count`` in doubles,
which is DuckDB's ``avg`` of integers. So the edges are the general path's exactly; tests
compare both, and a plain-Python reference, on edge cases.

Other joins than the overrides (person or session properties, cohorts) keep the semantics but
not the scan order (DuckDB's hash join does not keep it): correct, more problem actors.
:func:`edges` returns ``None`` when it does not apply (too many distinct values, a range
before 1970): the caller runs the general SQL.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from sightline.query.context import _PARAM

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SESSION_GAP_SECONDS = 30 * 60
GAP_US = SESSION_GAP_SECONDS * 1_000_000
MAX_DISTINCT = 1 << 20        # distinct (event, url) values; beyond, the general SQL
MAX_FILE_VALUES = 1 << 16     # a part file with more distinct values is not cached
MAX_CACHED_VALUES = 1 << 20   # values kept in the cache, all files together
WALK_SLICE = 1 << 17          # session heads walked together
STREAM_BATCH = 1 << 20        # rows per batch from DuckDB
# (part file path, event condition) → its distinct (event, $current_url), least recently used first
_VALUES: OrderedDict[tuple[str, str], list | None] = OrderedDict()
_VALUES_LOCK = threading.Lock()
_VALUES_SIZE = [0]
LOW64 = "18446744073709551615::UHUGEINT"
OVERRIDES_JOIN = (" LEFT JOIN person_overrides o ON o.project_id = e.project_id "
                  "AND o.old_person_id = e.person_id")  # Scope.joins() when nothing else is joined


@dataclass
class FastInput:
    """What :func:`edges` needs from :func:`sightline.query.paths.run`."""

    joins: str          # " LEFT JOIN ..." after ``events e``
    where: str          # the WHERE condition of the general query's ``ev`` CTE
    label: str          # the label expression over ``e.event`` and ``e.mat_current_url``
    drop: str | None    # extra condition on ``label`` that removes a row (excluded labels)
    actor: str          # the actor expression (PERSON_ID)
    project: str        # the project id's parameter
    events: str         # the condition on ``e.event`` (part of ``where``)
    start: Any          # the range (part of ``where``)
    end: Any
    params: dict[str, Any]
    limit: int


class _Snapshot:
    """One DuckDB cursor in a read-only transaction (every statement sees the same data),
    interrupted after ``timeout_s`` like :meth:`DuckDBStorage.query`."""

    def __init__(self, con: Any, timeout_s: float | None, timings: list, parts_dir: Any = None):
        self.parts_dir = parts_dir
        self.cur = con.cursor()
        self.timings = timings
        self.timed_out = threading.Event()
        self.timer = None
        self.cur.execute("BEGIN TRANSACTION READ ONLY")
        if timeout_s is not None:
            def fire() -> None:
                self.timed_out.set()
                self.cur.interrupt()

            self.timer = threading.Timer(max(float(timeout_s), 0.0), fire)
            self.timer.daemon = True
            self.timer.start()

    def run(self, sql: str, params: dict[str, Any], arrow: bool = False):
        used = set(_PARAM.findall(sql))
        params = {k: v for k, v in params.items() if k in used}
        started = time.perf_counter()
        rel = self.cur.sql(sql, params=params or None)
        out = rel.to_arrow_table() if arrow else rel.fetchall()
        self.timings.append((sql[:80], time.perf_counter() - started))
        return out

    def stream(self, sql: str, params: dict[str, Any], batch_rows: int | None = None):
        """Arrow record batches of ``sql`` (DuckDB computes the next ones meanwhile)."""
        used = set(_PARAM.findall(sql))
        params = {k: v for k, v in params.items() if k in used}
        started = time.perf_counter()
        yield from self.cur.sql(sql, params=params or None).to_arrow_reader(batch_rows or STREAM_BATCH)
        self.timings.append((sql[:80], time.perf_counter() - started))

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        try:
            self.cur.execute("ROLLBACK")
        except Exception:  # noqa: BLE001, S110 - the cursor may be interrupted already
            pass
        self.cur.close()


def edges(ctx: Any, fi: FastInput) -> list[tuple] | None:
    """``[(source, target, count, average ms)]`` like ``paths._edges_from_starts``, or ``None``."""
    import duckdb

    con = getattr(ctx.storage, "_con", None)
    if con is None or ctx.dialect.name != "duckdb" or fi.limit < 1:
        return None
    snap = _Snapshot(con, ctx.timeout_s, ctx.timings, getattr(ctx.storage, "parts_dir", None))
    try:
        return _edges(snap, fi)
    except duckdb.Error:
        if snap.timed_out.is_set():
            from sightline.errors import InvalidInput

            raise InvalidInput(f"The query ran longer than its limit of {ctx.timeout_s:g} s; narrow the "
                               "date range or the filters.", code="query_timeout", status=408) from None
        return None  # the general SQL runs (and reports the error the way every query does)
    finally:
        snap.close()


def _epoch_us(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // timedelta(microseconds=1)


def _slots(hashes: np.ndarray) -> tuple[int, int] | None:
    """(shift, bits) such that ``(h >> shift) & (2**bits - 1)`` differs for every hash."""
    n = len(hashes)
    for bits in range(max(n - 1, 1).bit_length() + 1, 23):
        mask = np.uint64((1 << bits) - 1)
        for shift in range(0, 64 - bits + 1, 3):
            slot = (hashes >> np.uint64(shift)) & mask
            if len(np.unique(slot)) == n:
                return shift, bits
    return None


def _values(snap: _Snapshot, fi: FastInput) -> tuple[list[tuple[str, str | None]] | None, int]:
    """A superset of the distinct ``(event, $current_url)`` of the rows the query reads: those
    of the hot rows, and those of every part file that may hold the project's rows in the
    range (files never change once written: each file's values are read once per process).
    Also the number of rows stored there (at least as many as the query reads)."""
    from sightline.storage.duckdb_parts import parts_in_range_sql

    params = {"fv_start": fi.start, "fv_end": fi.end, **fi.params}
    files = [(name, n) for name, n, _ in snap.run(parts_in_range_sql(fi.project, "$fv_start", "$fv_end"), params)]
    root = snap.parts_dir
    paths = [str(root / name) for name, _ in files]
    rows = sum(int(n or 0) for _, n in files)
    with _VALUES_LOCK:
        missing = [f for f in paths if (f, fi.events) not in _VALUES]
    if missing:
        found: dict[str, set] = {f: set() for f in missing}
        for event, url, name in snap.run(
                "SELECT DISTINCT e.event, e.mat_current_url, e.filename FROM "
                f"read_parquet($fv_files, hive_partitioning = false, filename = true) e WHERE {fi.events}",
                {"fv_files": missing}):
            found[name].add((event, url))
        with _VALUES_LOCK:
            for f, vals in found.items():
                _VALUES[(f, fi.events)] = sorted(vals, key=repr) if len(vals) <= MAX_FILE_VALUES else None
    out = set(snap.run(f"SELECT DISTINCT e.event, e.mat_current_url FROM events_hot e "
                       f"WHERE e.project_id = {fi.project} AND {fi.events}", params))
    rows += snap.run(f"SELECT count(*) FROM events_hot e WHERE e.project_id = {fi.project}", params)[0][0]
    with _VALUES_LOCK:
        for f in paths:
            vals = _VALUES.get((f, fi.events), False)
            if vals is False:  # (evicted by another query meanwhile)
                vals = found.get(f) if missing else None
            if vals is None or len(out) > MAX_DISTINCT:
                return None, 0
            if (f, fi.events) in _VALUES:
                _VALUES.move_to_end((f, fi.events))
            out.update(vals)
        _VALUES_SIZE[0] = sum(len(v or ()) + 1 for v in _VALUES.values())
        while _VALUES_SIZE[0] > MAX_CACHED_VALUES and len(_VALUES) > 1:
            _, gone = _VALUES.popitem(last=False)
            _VALUES_SIZE[0] -= len(gone or ()) + 1
    if len(out) > MAX_DISTINCT:
        return None, 0
    return sorted(out, key=repr), rows


def _edges(snap: _Snapshot, fi: FastInput) -> list[tuple] | None:
    src = f"FROM events e{fi.joins} WHERE {fi.where}"
    raw = "hash(e.event, e.mat_current_url)"
    drop = f"label IS NULL OR {fi.drop}" if fi.drop else "label IS NULL"
    values, capacity = _values(snap, fi) if snap.parts_dir is not None else (None, 0)
    if values is None:
        distinct = snap.run(
            f"SELECT h, label, {drop} AS dropped FROM (SELECT {raw} AS h, {fi.label} AS label "
            f"FROM (SELECT DISTINCT e.event, e.mat_current_url {src}) e)", fi.params)
    elif not values:
        return []
    else:
        distinct = snap.run(
            f"SELECT h, label, {drop} AS dropped FROM (SELECT {raw} AS h, {fi.label} AS label FROM "
            "(SELECT unnest($fv_events) AS event, unnest($fv_urls) AS mat_current_url) e)",
            {**fi.params, "fv_events": [v[0] for v in values], "fv_urls": [v[1] for v in values]})
    if not distinct:
        return []
    if len(distinct) > MAX_DISTINCT:
        return None
    hashes = np.array([r[0] for r in distinct], dtype=np.uint64)
    found = _slots(hashes)
    if found is None:
        return None
    shift, bits = found
    names = sorted({r[1] for r in distinct if not r[2]})
    code = {name: i for i, name in enumerate(names)}
    table = np.full(1 << bits, -1, dtype=np.int16 if len(distinct) < 1 << 15 else np.int32)
    slots = ((hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
    table[slots] = [-1 if r[2] else code[r[1]] for r in distinct]
    if not names:
        return []
    # DuckDB's hash join does not keep the scan order: when the overrides are the only join,
    # read the stored person ids and apply the overrides to the runs (_walk) instead
    overrides = None
    person = fi.actor
    hot = 0
    if fi.joins == OVERRIDES_JOIN and "o.override_person_id" not in fi.where:
        src = f"FROM events e WHERE {fi.where}"
        # the view reads the hot rows first: newer than the parts, they go last in the merge
        hot = snap.run(f"SELECT count(*) FROM events_hot e WHERE {fi.where}", fi.params)[0][0]
        person = "e.person_id"
        overrides = snap.run(
            f"SELECT (CAST(old_person_id AS UHUGEINT) >> 64)::UBIGINT, (CAST(old_person_id AS UHUGEINT) & {LOW64})"
            f"::UBIGINT, (CAST(override_person_id AS UHUGEINT) >> 64)::UBIGINT, (CAST(override_person_id AS "
            f"UHUGEINT) & {LOW64})::UBIGINT FROM person_overrides WHERE project_id = {fi.project}", fi.params)
    sql = (f"SELECT (CAST({person} AS UHUGEINT) >> 64)::UBIGINT AS a, "
           f"(CAST({person} AS UHUGEINT) & {LOW64})::UBIGINT AS b, epoch_us(e.timestamp) AS t, "
           f"(({raw} >> {shift}) & {(1 << bits) - 1})::{'USMALLINT' if bits <= 16 else 'UINTEGER'} AS s {src}")

    def batches():
        """The scan's columns, batch by batch; the hot rows at its head in (actor, time) order
        (the hot table is in arrival order: an actor's rows lie apart)."""
        pending: list[list[np.ndarray]] = []
        need = hot
        for batch in snap.stream(sql, fi.params):
            cols = [batch.column(i).to_numpy() for i in range(4)]
            if need > 0:
                pending.append(cols)
                need -= len(cols[0])
                if need > 0:
                    continue
                cols, pending = _sort_head(pending, hot), []
            a, b, t, slot = cols
            yield a, b, t, table[slot]
        if pending:
            a, b, t, slot = _sort_head(pending, hot)
            yield a, b, t, table[slot]

    dropped = any(r[2] for r in distinct)
    lo, hi = _epoch_us(fi.start), _epoch_us(fi.end)
    if lo < 0:
        return None  # (the SQL truncates whole milliseconds toward zero: not done here)
    counts, sums, problem = _walk_batches(batches(), fi.limit, len(names), overrides, hot, dropped, lo=lo, hi=hi,
                                          capacity=capacity)
    out: dict[tuple[int, str, str], list[int]] = {}
    for (k, x, y), (c, s) in zip(counts.keys(), zip(counts.values(), sums.values())):
        out[(k, names[x], names[y])] = [c, s]
    if len(problem):
        for k, x, y, c, s in _problem_edges(snap, fi, problem):
            acc = out.setdefault((k, x, y), [0, 0])
            acc[0] += c
            acc[1] += s
    return [(f"{k}_{x}", f"{k + 1}_{y}", int(c), float(s) / c) for (k, x, y), (c, s) in out.items()]


def _sort_head(pending: list[list[np.ndarray]], head: int) -> list[np.ndarray]:
    """The batches' columns concatenated, the first ``head`` rows stably sorted by (a, b, t)."""
    cols = [np.concatenate([p[i] for p in pending]) for i in range(len(pending[0]))]
    a, b, t = cols[0][:head], cols[1][:head], cols[2][:head]
    order = np.lexsort((t, b, a))
    for c in cols:
        c[:head] = c[:head][order]
    return cols


def _walk(a: np.ndarray, b: np.ndarray, t: np.ndarray, lab: np.ndarray, limit: int, nlabels: int,
          overrides: list[tuple] | None = None, head: int = 0):
    """:func:`_walk_batches` over one batch of whole arrays (timestamps of 1970 or later)."""
    lo, hi = int(t.min()), int(t.max())
    return _walk_batches([(a, b, t, lab)], limit, nlabels, overrides, head, lo=lo, hi=hi)


class _Out:
    """An array filled batch by batch, in place while the capacity lasts (pages never written
    are never touched), then in pieces concatenated at the end."""

    def __init__(self, capacity: int, dtype):
        self.buf = np.empty(capacity, dtype=dtype)
        self.dtype = dtype
        self.pieces: list[np.ndarray] = []
        self.n = 0

    def take(self, m: int) -> np.ndarray:
        if not self.pieces and self.n + m <= len(self.buf):
            view = self.buf[self.n:self.n + m]
        else:
            if not self.pieces:
                self.pieces.append(self.buf[:self.n])
            view = np.empty(m, dtype=self.dtype)
            self.pieces.append(view)
        self.n += m
        return view

    def result(self) -> np.ndarray:
        return self.buf[:self.n] if not self.pieces else np.concatenate(self.pieces)


def _scan(batches, head: int, dropped: bool, base: int, mstype, exact_int: bool, capacity: int = 0):
    """The per-row passes, batch by batch as DuckDB hands them over (it reads the next batches
    meanwhile). Returns: each row's whole milliseconds after ``base`` (µs, a multiple of 1000
    at or before every row: the SQL's ``epoch_us // 1000`` differences), label and ``sn``
    (followed within the gap by the next row in scan order, SQL's comparison of double epoch
    seconds; fixed at run ends later); each run's first row, actor halves, first and last
    timestamp; rows out of order inside a run. ``None`` without rows. With ``dropped``, rows
    labelled -1 (no label, or an excluded one: not in the general query's ``ev2``) are left
    out. ``exact_int``: every timestamp is within 2**52 µs of 1970, where two epoch-second
    doubles differ by the exact difference give or take 0.25 µs, so an integer comparison
    decides unless the difference is exactly the gap. ``capacity``: at least the number of
    rows if known (the outputs are filled in place), else 0. Temporaries reuse one scratch
    buffer: fresh memory for each batch would cost more in page faults than the arithmetic."""
    mss = labs = sns = None
    starts, ras, rbs, t0s, t1s = (_Out(capacity // 4, dt) for dt in
                                  (np.int64, np.uint64, np.uint64, np.int64, np.int64))
    bads = []
    o = raw = 0
    pa = pb = pt = None
    prev_sn = None
    scratch = np.empty(0, dtype=np.int64)
    flags = flags2 = np.empty(0, dtype=bool)
    for a, b, t, lab in batches:
        if dropped:
            keep = lab >= 0
            if 0 <= head - raw < len(t):  # the head counts rows before the filter
                head = head - raw + o - int(np.count_nonzero(~keep[:head - raw]))
                raw = -(1 << 62)
            raw += len(t)
            a, b, t, lab = a[keep], b[keep], t[keep], lab[keep]
        m = len(t)
        if not m:
            continue
        if mss is None:
            mss, labs, sns = _Out(capacity, mstype), _Out(capacity, lab.dtype), _Out(capacity, bool)
        if len(scratch) < m:
            scratch = np.empty(m, dtype=np.int64)
            flags = np.empty(m, dtype=bool)
            flags2 = np.empty(m, dtype=bool)
        nr = flags[:m]
        np.not_equal(a[1:], a[:-1], out=nr[1:])
        sn = sns.take(m)
        np.not_equal(b[1:], b[:-1], out=sn[1:])
        nr[1:] |= sn[1:]
        sn[-1] = False
        d = scratch[:m - 1]
        np.subtract(t[1:], t[:-1], out=d)
        if exact_int:
            np.less(d, GAP_US, out=sn[:-1])
            x = np.flatnonzero(d == GAP_US)
            if len(x):
                sn[x] = (t[x + 1] / 1e6 - t[x] / 1e6) < SESSION_GAP_SECONDS
        else:
            sn[:-1] = (t[1:] / 1e6 - t[:-1] / 1e6) < SESSION_GAP_SECONDS
        inside = flags2[:m - 1]  # out of order inside a run: d <= 0 where no run starts
        np.less_equal(d, 0, out=inside)
        np.greater(inside, nr[1:], out=inside)
        if inside.any():
            bads.append(np.flatnonzero(inside) + o)
        if pt is None:
            nr[0] = True
        else:  # the pair across the batches
            nr[0] = bool(a[0] != pa or b[0] != pb)
            t_0 = int(t[0])
            prev_sn[-1] = (t_0 / 1e6 - pt / 1e6) < SESSION_GAP_SECONDS
            if t_0 <= pt and not nr[0]:
                bads.append(np.array([o - 1]))
        if 0 < head - o < m:
            nr[head - o] = True
        st = np.flatnonzero(nr)
        k = len(st)
        np.add(st, o, out=starts.take(k))
        np.take(a, st, out=ras.take(k))
        np.take(b, st, out=rbs.take(k))
        np.take(t, st, out=t0s.take(k))
        last = t1s.take(k - 1 if pt is None else k)  # the last timestamp of the run before each start
        if pt is None:
            np.take(t, st[1:] - 1, out=last)
        elif k and st[0] == 0:
            last[0] = pt
            np.take(t, st[1:] - 1, out=last[1:])
        else:
            np.take(t, st - 1, out=last)
        ms = scratch[:m]
        np.subtract(t, base, out=ms)
        np.floor_divide(ms, 1000, out=mss.take(m), casting="unsafe")  # (values fit: see mstype)
        labs.take(m)[:] = lab
        prev_sn = sn
        pa, pb, pt = a[-1], b[-1], int(t[-1])
        o += m
    if not o:
        return None
    t1s.take(1)[0] = pt
    return (mss.result(), labs.result(), sns.result(), starts.result(), ras.result(), rbs.result(),
            t0s.result(), t1s.result(), np.concatenate(bads) if bads else np.empty(0, dtype=np.int64))


def _walk_batches(batches, limit: int, nlabels: int, overrides: list[tuple] | None = None, head: int = 0,
                  dropped: bool = False, *, lo: int, hi: int, capacity: int = 0):
    """Edges of the actors whose runs line up (see the module docstring), and the upper uuid
    halves of the other actors. ``batches`` yield arrays ``(a, b, t, lab)`` in scan order:
    ``a``/``b`` are the halves of the actor's uuid, or of the stored person's when
    ``overrides`` (old halves, new halves) are given; every ``t`` (epoch µs) is in [lo, hi],
    ``lo >= 0``. The first ``head`` rows (the hot rows) come after all the others in time
    order, not before.
    Returns ({(k, src, dst): count}, {(k, src, dst): ms sum}, hi)."""
    base = lo - lo % 1000
    mstype = np.uint32 if (hi - base) // 1000 < 1 << 32 else np.int64
    exact_int = hi < 1 << 52
    scanned = _scan(batches, head, dropped, base, mstype, exact_int, capacity)
    if scanned is None:
        return {}, {}, np.empty(0, dtype=np.uint64)
    ms, lab, sn, starts, ra, rb, tfirst, tlast, bad = scanned
    n = len(ms)
    nruns = len(starts)
    ends = np.empty(nruns, dtype=np.int64)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    if overrides:
        old = np.array([r[:2] for r in overrides], dtype=np.uint64)
        new = np.array([r[2:] for r in overrides], dtype=np.uint64)
        hit = np.flatnonzero(np.isin(ra, old[:, 0]))
        if len(hit):
            index = {(int(x), int(y)): i for i, (x, y) in enumerate(old.tolist())}
            for r in hit.tolist():
                i = index.get((int(ra[r]), int(rb[r])))
                if i is not None:
                    ra[r], rb[r] = new[i]
    problem_hi = []
    # inside a run, timestamps must strictly increase (equal ones are ordered by uuid: SQL decides)
    if len(bad):
        problem_hi.append(np.unique(ra[np.searchsorted(starts, bad, side="right") - 1]))
    # the runs of an actor, in scan order (a stable merge of the files' actor-ordered runs)
    if 0 < head < n:
        k = int(np.searchsorted(starts, head))  # runs [0, k) are the head's
        first = np.concatenate((np.arange(k, nruns), np.arange(k)))
        order = first[np.argsort(ra[first], kind="stable")]
    else:
        order = np.argsort(ra, kind="stable")
    oa, ob = ra[order], rb[order]
    same_hi = oa[1:] == oa[:-1]
    same = same_hi & (ob[1:] == ob[:-1])
    if np.any(same_hi & ~same):  # two actors sharing the upper half (their runs may interleave)
        problem_hi.append(np.unique(oa[1:][same_hi & ~same]))
    pair = np.flatnonzero(same)
    prev_run, next_run = order[pair], order[pair + 1]  # consecutive runs of one actor
    overlap = tlast[prev_run] >= tfirst[next_run]
    if np.any(overlap):
        problem_hi.append(np.unique(ra[prev_run[overlap]]))
    problem = np.unique(np.concatenate(problem_hi)) if problem_hi else np.empty(0, dtype=np.uint64)
    del order, oa, ob, same_hi, same, pair

    link = np.full(nruns, -1, dtype=np.int64)  # first row of the actor's next run
    link[prev_run] = starts[next_run]
    end_sn = np.zeros(nruns, dtype=bool)
    end_sn[prev_run] = (tfirst[next_run] / 1e6 - tlast[prev_run] / 1e6) < SESSION_GAP_SECONDS
    sn[ends] = end_sn
    # a duplicate followed within the gap by its own label collapses into that one
    drop = np.zeros(n, dtype=bool)
    np.equal(lab[1:], lab[:-1], out=drop[:-1])
    drop &= sn
    dup = np.zeros(nruns, dtype=bool)  # at run ends: the actor's next run starts with the same label
    dup[prev_run] = end_sn[prev_run] & (lab[starts][next_run] == lab[ends][prev_run])
    drop[ends] = dup
    # raw sessions start after a row not followed within the gap; their first kept row heads
    # the path session (the last row of a raw session is never dropped)
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.logical_not(sn[:-1], out=start[1:])
    first_of_actor = np.ones(nruns, dtype=bool)
    first_of_actor[next_run] = False
    start[starts] = first_of_actor
    start[starts[next_run]] = ~end_sn[prev_run]
    if len(problem):
        start &= np.repeat(~np.isin(ra, problem), ends - starts + 1)
    cur = np.flatnonzero(start)
    del start
    is_end = np.zeros(n, dtype=bool)
    is_end[ends] = True
    # plain[r]: the actor's next event after r is r + 1, and it is kept
    plain = np.empty(n, dtype=bool)
    np.logical_not(drop[1:], out=plain[:-1])
    plain[-1] = False
    plain[ends] = False

    def step(rows: np.ndarray) -> np.ndarray:
        nx = rows + 1
        at_end = np.flatnonzero(is_end[rows])
        if len(at_end):
            nx[at_end] = link[np.searchsorted(ends, rows[at_end])]
        return nx

    def skip_dropped(rows: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(drop[rows])
        while len(idx):
            rows[idx] = step(rows[idx])
            idx = idx[drop[rows[idx]]]
        return rows

    def advance(rows: np.ndarray) -> np.ndarray:
        """The next kept event of each row's actor (each row is followed within the gap)."""
        nx = rows + 1
        odd = np.flatnonzero(~plain[rows])
        if len(odd):
            nx[odd] = skip_dropped(step(rows[odd]))
        return nx

    cur = skip_dropped(cur)
    width = nlabels * nlabels
    ktype = np.int32 if width < 1 << 31 else np.int64

    small = width <= 1 << 22
    if small:
        total_c = np.zeros((limit, width), dtype=np.int64)
        total_s = np.zeros((limit, width), dtype=np.float64)
    parts = []

    def walk(cur: np.ndarray) -> None:
        """Count the edges k → k + 1 from the given session heads (ascending)."""
        lcur = lab[cur].astype(ktype)
        mcur = ms[cur]
        for k in range(1, limit):
            alive = np.flatnonzero(sn[cur])
            cur, lcur, mcur = cur[alive], lcur[alive], mcur[alive]
            if not len(cur):
                break
            nx = advance(cur)
            lnx = lab[nx].astype(ktype)
            mnx = ms[nx]
            key = lcur * nlabels + lnx
            dms = mnx - mcur  # whole ms, < 2**53 in total: the double sums are exact
            if small:
                total_c[k] += np.bincount(key, minlength=width)
                total_s[k] += np.bincount(key, weights=dms, minlength=width)
            else:
                keys, inv = np.unique(key, return_inverse=True)
                parts.append((k, keys, np.bincount(inv), np.bincount(inv, weights=dms)))
            cur, lcur, mcur = nx, lnx, mnx

    # heads in slices: the rows a slice's walk reads lie close together (cache-friendly)
    for i in range(0, len(cur), WALK_SLICE):
        walk(cur[i:i + WALK_SLICE])
    if small:
        for k in range(1, limit):
            hit = np.flatnonzero(total_c[k])
            parts.append((k, hit, total_c[k][hit], total_s[k][hit]))
    counts: dict = {}
    sums: dict = {}
    for k, keys, cs, ss in parts:
        for kk, cc, s_ in zip(keys.tolist(), cs.tolist(), ss.tolist(), strict=True):
            key3 = (k, kk // nlabels, kk % nlabels)
            counts[key3] = counts.get(key3, 0) + cc
            sums[key3] = sums.get(key3, 0) + int(s_)
    return counts, sums, problem


def _problem_edges(snap: _Snapshot, fi: FastInput, problem: np.ndarray) -> list[tuple]:
    """The general SQL (``paths._edges_from_starts``) over the given actors only: rows
    ``(k, source label, target label, count, sum of ms)``."""
    gap = SESSION_GAP_SECONDS
    limit = fi.limit
    params = dict(fi.params)
    params["fast_problem_hi"] = [int(x) for x in problem]
    ev = (f"ev AS (SELECT {fi.actor} AS actor, e.timestamp AS ts, e.uuid AS uuid, {fi.label} AS label "
          f"FROM events e{fi.joins} WHERE {fi.where} AND (CAST({fi.actor} AS UHUGEINT) >> 64)::UBIGINT IN "
          "(SELECT unnest($fast_problem_hi)))")
    ev2 = "ev2 AS (SELECT * FROM ev WHERE label IS NOT NULL" + (f" AND NOT ({fi.drop}))" if fi.drop else ")")
    within = f"coalesce(nts >= ts AND epoch(nts) - epoch(ts) < {gap}, false)"
    win = "WINDOW w AS (PARTITION BY actor ORDER BY ts, uuid)"
    leads = "".join(f", lead(label, {j}) OVER w AS l{j}, lead(ts, {j}) OVER w AS t{j}"
                    + (f", lead(sn, {j}) OVER w AS n{j}" if j < limit - 1 else "") for j in range(1, limit))
    ctes = [ev, ev2,
            f"p1 AS (SELECT actor, ts, uuid, label, lead(ts) OVER w AS nts, lead(label) OVER w AS nlabel FROM ev2 {win})",
            f"k1 AS (SELECT actor, ts, uuid, label, {within} AS sn FROM p1 WHERE NOT ({within} AND nlabel = label))",
            f"p2 AS (SELECT label AS l0, ts AS t0, sn AS n0, lag(sn) OVER w AS psn{leads} FROM k1 {win})",
            "heads AS (SELECT * FROM p2 WHERE psn IS NULL OR NOT psn)"]
    steps = []
    for k in range(1, limit):
        cond = " AND ".join(f"n{j}" for j in range(k))
        steps.append(f"SELECT {k} AS k, l{k - 1} AS a, l{k} AS b, "
                     f"(epoch_us(t{k}) // 1000) - (epoch_us(t{k - 1}) // 1000) AS dt FROM heads WHERE {cond}")
    if not steps:
        return []
    sql = ("WITH " + ", ".join(ctes) + " SELECT k, a, b, count(*), sum(dt) FROM ("
           + " UNION ALL ".join(steps) + ") GROUP BY k, a, b")
    return [(int(k), x, y, int(c), int(s)) for k, x, y, c, s in snap.run(sql, params)]
