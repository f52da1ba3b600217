"""The group-commit writer: the only code that changes events and persons.

Two threads share the work:

* the **writer** takes everything queued by requests (capture requests: the event loop's own
  thread, see :meth:`Writer._enqueue`), drops duplicates and resolves identities (in memory);
  the **syncer** builds the group's Arrow table and appends one record for it to the
  ingestion log (:mod:`sightline.ingest.wal`) and fsyncs it (once for every group waiting); only
  then are the requests' futures resolved, so an HTTP 200 always means "durable";
* the **flusher** stores logged records in the event store in large transactions (about once a
  second, or sooner when someone reads), together with the log position they reach, so a
  restart replays exactly the records the store does not have yet.

Readers that need their own writes call :meth:`Writer.sync`, which flushes at once.

Duplicate events (same project and uuid, as SDKs send on retry) are dropped against a window of
recently stored uuids held in memory and warmed from storage at start.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa

from sightline.errors import Unavailable
from sightline.ingest.normalize import Event
from sightline.ingest.wal import IngestLog, Position, decode, encode_parts
from sightline.persons.identity import ChangeRows, Changes, IdentityState, change_rows
from sightline.storage.base import Storage
from sightline.storage.schema import EVENT_BATCH_SCHEMA, GROUP_COLUMNS, epoch_micros, events_to_arrow

log = logging.getLogger("sightline.writer")
UTC = timezone.utc

DEDUP_WINDOW = 1_000_000
DEDUP_WARM_PERIOD = timedelta(hours=24)
REPLAY_CHUNK_ROWS = 200_000
_TS = pa.timestamp("us", tz="UTC")
_PROJECT_ID = EVENT_BATCH_SCHEMA.get_field_index("project_id")
_PERSON_ID = EVENT_BATCH_SCHEMA.get_field_index("person_id")
_CREATED_AT = EVENT_BATCH_SCHEMA.get_field_index("created_at")


@dataclass
class WriteResult:
    stored: int
    duplicates: int


@dataclass
class WriterStats:
    batches: int = 0
    events_stored: int = 0
    duplicates: int = 0
    failures: int = 0
    flushes: int = 0
    events_flushed: int = 0
    replayed: int = 0
    last_commit_seconds: float = 0.0
    last_flush_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)  # recent group sizes (bounded)


@dataclass
class _Item:
    project_id: int
    events: list[Event]
    future: Future


@dataclass
class _TableItem:
    """A request prepared by a capture worker: its rows as an Arrow IPC table (persons not yet
    resolved), exact timestamps and the events that need identity's full rules."""

    project_id: int
    table: bytes
    timestamps_us: list[int]
    specials: list[tuple[int, Event]]
    count: int
    future: Future

    @property
    def events(self) -> range:  # the pending-event count and group sizes read len(item.events)
        return range(self.count)


@dataclass
class _Job:
    """Bulk work run in the writer thread: ``fn(identity, changes)`` returns the events table."""

    fn: Callable
    future: Future
    bulk: bool = True
    exclusive: bool = False


_STOP = object()


def _resolve(pairs: list[tuple[asyncio.Future, Any]], error: Exception | None) -> None:
    for future, result in pairs:
        if future.done():  # cancelled: the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _warm_up() -> None:
    """pyarrow imports pandas on its first conversion of a Python list (a third of a second):
    pay that when the writer starts (before the server answers), not in the first commit."""
    try:
        pa.array([0], pa.int64())
    except Exception:  # pragma: no cover - only a warm-up
        pass


class RecentUuids:
    """A bounded set of (project_id, uuid) with first-in-first-out eviction.

    Held as one set of uuid strings per project and two deques in step (uuids, projects), not
    as ``(project_id, uuid)`` tuples: strings and ints are not tracked by the cyclic garbage
    collector, whereas a million tuples made every young-generation collection walk the newest
    of them (milliseconds of the event loop each time)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._sets: dict[int, set[str]] = {}
        self._order: deque[str] = deque()
        self._order_pid: deque[int] = deque()

    def __contains__(self, key: tuple[int, str]) -> bool:
        members = self._sets.get(key[0])
        return members is not None and key[1] in members

    def project(self, project_id: int) -> set[str]:
        """The uuids held for one project (read only: for fast membership tests)."""
        members = self._sets.get(project_id)
        if members is None:
            members = self._sets[project_id] = set()
        return members

    def add(self, key: tuple[int, str]) -> None:
        self.add_many((key,))

    def add_many(self, keys: Iterable[tuple[int, str]]) -> None:
        """``add`` each key in order (the same set and eviction order), in one call."""
        order, order_pid = self._order, self._order_pid
        for pid, uuid in keys:
            members = self.project(pid)
            if uuid not in members:
                members.add(uuid)
                order.append(uuid)
                order_pid.append(pid)
        self._evict()

    def add_new(self, project_id: int, uuids: "set[str]") -> None:
        """:meth:`add_many` for one project's uuids none of which is held yet (the writer's own
        check), in C-level loops."""
        self.project(project_id).update(uuids)
        self._order.extend(uuids)
        self._order_pid.extend([project_id] * len(uuids))
        self._evict()

    def discard(self, project_id: int, uuids: Iterable[str]) -> None:
        """Forget uuids (of events that were not stored after all); their queue entries stay
        and are dropped when they reach the front."""
        members = self._sets.get(project_id)
        if members is not None:
            members.difference_update(uuids)

    def _evict(self) -> None:
        order, order_pid, sets = self._order, self._order_pid, self._sets
        for _ in range(len(order) - self.capacity):
            sets[order_pid.popleft()].discard(order.popleft())

    def __len__(self) -> int:
        return sum(len(m) for m in self._sets.values())


def _group_table(stored: list[Event], project_ids: list[int], pieces: list[pa.Table],
                 now: datetime) -> pa.Table:
    """A group's events table: its events' rows, then the capture workers' pieces (``created_at``
    is ``now`` for every row)."""
    table = events_to_arrow(stored, project_ids, now) if stored or not pieces else None
    if pieces:
        created = pa.repeat(pa.scalar(epoch_micros(now), pa.int64()),
                            sum(p.num_rows for p in pieces)).view(_TS)
        merged = pa.concat_tables(pieces)
        merged = merged.set_column(_CREATED_AT, "created_at", created)
        table = merged if table is None else pa.concat_tables([table, merged])
    return table


class Writer:
    def __init__(self, storage: Storage, identity_loader: Callable[[], IdentityState], *,
                 wal_dir: str | Path, max_batch_events: int = 50_000, max_pending_events: int = 500_000,
                 flush_interval: float = 1.0, flush_events: int = 100_000,
                 max_unflushed_events: int = 2_000_000, dedup_window: int = DEDUP_WINDOW) -> None:
        self.storage = storage
        self._identity_loader = identity_loader
        self.max_batch_events = max_batch_events
        self.max_pending_events = max_pending_events
        self.flush_interval = flush_interval
        self.flush_events = flush_events
        self.max_unflushed_events = max_unflushed_events
        self.stats = WriterStats()
        self.on_commit: Callable[[int], None] | None = None  # metrics: events per group commit
        self.log = IngestLog(wal_dir)
        self._log_lock = threading.Lock()
        self._replay()
        self.identity = identity_loader()
        self.recent = RecentUuids(dedup_window)
        for key in reversed(list(storage.recent_event_uuids(datetime.now(UTC) - DEDUP_WARM_PERIOD,
                                                            dedup_window))):
            self.recent.add((key[0], key[1]))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        # flushing state
        self._to_flush: queue.SimpleQueue = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._acked: Position = self.log.position
        # Groups committed with a record for the log, and how many of them the syncer has settled
        # (logged and acknowledged, or failed): a job waits until every committed group is settled.
        self._groups_logged = 0
        self._groups_settled = 0
        # Bumped by the syncer when a record could not be logged: records of the same epoch were
        # resolved against identity changes that are lost, so they fail too, and the next commit
        # reloads the identity state first (_identity_stale).
        self._log_epoch = 0
        self._identity_stale = False
        self._forget: list[tuple[list, list]] = []  # (project ids, uuids) of groups that failed there
        self._flushed: Position = self.log.position
        self._unflushed = 0
        self._oldest_unflushed: float | None = None
        self._sync_requested = threading.Event()
        self._flush_error: Exception | None = None
        self.checkpoint_interval = 30.0      # seconds of quiet before a checkpoint
        self.checkpoint_events = 2_000_000   # or after this many events, quiet or not
        self._last_checkpoint = time.monotonic()
        self._flushed_since_checkpoint = 0
        self._to_sync: queue.SimpleQueue = queue.SimpleQueue()
        # live flushes insert without the store's worker threads where it has them (DuckDB)
        self._flush_options = ({"serial": True} if "serial" in inspect.signature(storage.append).parameters
                               else {})
        self._thread = threading.Thread(target=self._run, name="sightline-writer", daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name="sightline-syncer", daemon=True)
        self._flusher = threading.Thread(target=self._flush_loop, name="sightline-flusher", daemon=True)
        self._running = False
        # commits made by an event loop's thread (see _enqueue)
        self._commit_lock = threading.Lock()
        self._loop_items: list = []
        self._loop_scheduled = False

    # -- lifecycle -----------------------------------------------------------------------
    def _replay(self) -> None:
        """Store the logged records the event store does not hold yet (after a crash)."""
        stored = self.storage.wal_position()
        tables: list[pa.Table] = []
        rows = ChangeRows()
        last: Position | None = None
        n = 0
        for payload, position in self.log.records_after(stored):
            table, changes = decode(payload)
            tables.append(table)
            rows.merge(changes)
            last = position
            n += table.num_rows
            if n >= REPLAY_CHUNK_ROWS:
                self.storage.append(pa.concat_tables(tables), rows, wal_position=last)
                self.stats.replayed += n
                tables, rows, n = [], ChangeRows(), 0
        if last is not None and (tables or rows):
            self.storage.append(pa.concat_tables(tables), rows, wal_position=last)
            self.stats.replayed += n
        if last is not None or stored is not None:
            self.log.release(last or stored)
        if self.stats.replayed:
            log.info("replayed %d logged events into the store", self.stats.replayed)

    def start(self) -> None:
        _warm_up()
        self._running = True
        self._thread.start()
        self._syncer.start()
        self._flusher.start()

    def stop(self) -> None:
        """Log everything already queued, store everything logged, then stop both threads."""
        if not self._running:
            return
        self._running = False
        with self._commit_lock:  # an event loop's commit in progress ends (later ones see _running)
            pass
        self._queue.put(_STOP)
        self._thread.join()
        self._to_sync.put(_STOP)
        self._syncer.join()
        self._to_flush.put(_STOP)
        self._flusher.join()
        with self._log_lock:
            self.log.close()

    @property
    def pending_events(self) -> int:
        return self._pending

    @property
    def unflushed_events(self) -> int:
        return self._unflushed

    @property
    def lag_seconds(self) -> float:
        """How long the oldest logged event has waited to reach the store (0 when none waits)."""
        oldest = self._oldest_unflushed
        return 0.0 if oldest is None else time.monotonic() - oldest

    # -- submitting ----------------------------------------------------------------------
    def submit(self, project_id: int, events: list[Event], *, in_loop: bool = False) -> "Future | asyncio.Future":
        """Queue ``events`` for the next group commit; the future gives a :class:`WriteResult`
        once they are durable. ``in_loop``: the caller is an asyncio event loop's thread (see
        :meth:`_enqueue`), and the future is that loop's (await it; ``asyncio.wrap_future`` keeps it)."""
        future = asyncio.get_running_loop().create_future() if in_loop else Future()
        if self._admit(len(events), future):
            self._enqueue(_Item(project_id, events, future), in_loop)
        return future

    def submit_table(self, project_id: int, table: bytes, timestamps_us: list[int],
                     specials: list[tuple[int, Event]], *, in_loop: bool = False) -> "Future | asyncio.Future":
        """:meth:`submit` for a request a capture worker prepared
        (:class:`sightline.ingest.capture_pool.Prepared`): same dedup, persons, log and answer."""
        future = asyncio.get_running_loop().create_future() if in_loop else Future()
        count = len(timestamps_us)
        if self._admit(count, future):
            self._enqueue(_TableItem(project_id, table, timestamps_us, specials, count, future), in_loop)
        return future

    def _admit(self, count: int, future: "Future | asyncio.Future") -> bool:
        if not self._running:
            future.set_exception(Unavailable("Sightline is shutting down; retry shortly."))
            return False
        with self._pending_lock:
            if self._pending + count > self.max_pending_events and self._pending:
                future.set_exception(Unavailable(
                    "Ingestion is behind: too many events are waiting to be written. Retry shortly.",
                    code="ingestion_backpressure"))
                return False
            self._pending += count
        return True

    def _enqueue(self, item: "_Item | _TableItem", in_loop: bool) -> None:
        """Hand ``item`` to a group commit.

        From an event loop (``in_loop``), the loop itself commits everything its requests
        submitted in one pass of the loop, right after those handlers: no hand-over to the
        writer thread, whose wake-ups and interpreter-lock transfers cost more CPU than the
        commit itself at high request rates, and bigger groups. The writer thread keeps
        everything else (the Python API, jobs) and takes the loop's items whenever it is busy
        (the commit lock is held by a job) or the store lags far behind (the commit may wait)."""
        if not in_loop:
            self._queue.put(item)
            return
        self._loop_items.append(item)
        if not self._loop_scheduled:
            self._loop_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit_loop_items)

    def _commit_loop_items(self) -> None:
        items, self._loop_items = self._loop_items, []
        self._loop_scheduled = False
        if not items:
            return
        if self._unflushed >= self.max_unflushed_events or not self._commit_lock.acquire(blocking=False):
            for item in items:  # the writer thread commits them (it may wait; the loop must not)
                self._queue.put(item)
            return
        try:
            if not self._running:
                self._finish(items, error=Unavailable("Sightline is shutting down; retry shortly."))
                return
            self._commit(items)
        finally:
            self._commit_lock.release()

    def write(self, project_id: int, events: list[Event], timeout: float | None = None) -> WriteResult:
        """Blocking submit, for the Python API and the CLI."""
        return self.submit(project_id, events).result(timeout)

    def submit_job(self, fn: Callable, *, bulk: bool = True) -> Future:
        """Run ``fn(identity, changes) -> events table`` in the writer thread and store the
        result in one transaction (as an immutable part when ``bulk``) after everything logged
        before it. The future gives the number of events stored."""
        future: Future = Future()
        if not self._running:
            future.set_exception(Unavailable("Sightline is shutting down."))
            return future
        self._queue.put(_Job(fn, future, bulk))
        return future

    def run_job(self, fn: Callable, *, bulk: bool = True) -> int:
        return self.submit_job(fn, bulk=bulk).result()

    def run_exclusive(self, fn: Callable[[IdentityState], Any], *, purge_log: bool = False) -> Any:
        """Run ``fn(identity)`` in the writer thread with the store to itself: everything logged
        before is stored first, and nothing is logged or stored until ``fn`` returns. For
        maintenance that changes stored data (deletions, unmerges, pruning, backups). ``fn`` may
        change ``identity`` in place; if it raises, the identity is reloaded from the store.
        ``purge_log`` deletes the ingestion log's old segments afterwards (they may hold data
        ``fn`` removed). Returns what ``fn`` returns."""
        future: Future = Future()
        if not self._running:
            raise Unavailable("Sightline is shutting down.")
        self._queue.put(_Job(lambda identity, _changes: (fn(identity), purge_log), future, exclusive=True))
        return future.result()

    def sync(self, timeout: float | None = 60) -> None:
        """Return once everything acknowledged so far is in the store (read-your-writes)."""
        with self._cond:
            target = self._acked
            if self._flushed >= target:
                return
            self._sync_requested.set()
            self._to_flush.put(None)  # wake the flusher
            if not self._cond.wait_for(lambda: self._flushed >= target or self._flush_error is not None,
                                       timeout):
                raise Unavailable("Events are not in the store yet; retry shortly.", code="ingestion_lag")
            if self._flushed < target and self._flush_error is not None:
                raise Unavailable(f"Storing events is failing: {self._flush_error}", code="storage_error")

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                break
            if isinstance(first, _Job):
                with self._commit_lock:
                    self._run_job(first)
                continue
            items = [first]
            count = len(first.events)
            while count < self.max_batch_events:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or isinstance(nxt, _Job):
                    carry = nxt
                    break
                items.append(nxt)
                count += len(nxt.events)
            with self._commit_lock:
                self._commit(items)
        while True:  # drain anything that raced with stop
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            with self._commit_lock:
                if isinstance(nxt, _Job):
                    self._run_job(nxt)
                elif nxt is not _STOP:
                    self._commit([nxt])

    def _commit(self, items: list[_Item]) -> None:
        changes = Changes()
        stored: list[Event] = []
        project_ids: list[int] = []
        results: list[WriteResult] = []
        seen: dict[int, set[str]] = {}  # project → uuids of this group (new ones)
        identity, recent = self.identity, self.recent
        started = time.perf_counter()
        pieces: list[pa.Table] = []
        epoch = self._log_epoch  # read before the identity is checked (see _sync_loop)
        try:
            self._check_identity()
            identity = self.identity
            for item in items:
                pid = item.project_id
                recent_keys = recent.project(pid)
                seen_p = seen.get(pid)
                if seen_p is None:
                    seen_p = seen[pid] = set()
                if type(item) is _TableItem:
                    piece, kept_n = self._resolve_table(item, changes, seen_p, recent_keys)
                    if kept_n:
                        pieces.append(piece)
                    results.append(WriteResult(kept_n, item.count - kept_n))
                    continue
                events = item.events
                uuids = [e.uuid for e in events]
                fresh = set(uuids)
                if len(fresh) == len(uuids) and fresh.isdisjoint(recent_keys) and fresh.isdisjoint(seen_p):
                    seen_p |= fresh  # the everyday request: no duplicate (set operations in C)
                    kept = events
                else:
                    kept = []
                    for event in events:
                        uuid = event.uuid
                        if uuid in recent_keys or uuid in seen_p:
                            continue
                        seen_p.add(uuid)
                        kept.append(event)
                identity.process_batch(pid, kept, changes)  # in order, as process() one by one
                stored += kept
                project_ids += [pid] * len(kept)
                results.append(WriteResult(len(kept), len(item.events) - len(kept)))
            record = None
            n_stored = len(stored) + sum(p.num_rows for p in pieces)
            if n_stored or changes:
                rows = change_rows(changes)
                self._wait_for_room()
                # the syncer thread builds the group's table, encodes and appends the record, then
                # fsyncs (off this thread, which is usually the event loop's)
                record = (stored, project_ids, pieces, datetime.now(UTC), rows, epoch)
                self._groups_logged += 1
        except Exception as exc:  # nothing of this group is durable
            log.exception("preparing %d events failed", len(stored) + sum(p.num_rows for p in pieces))
            self.stats.failures += 1
            try:
                self.identity = self._identity_loader()  # drop the unlogged identity changes
            except Exception:  # pragma: no cover - storage is gone; keep the old state
                log.exception("reloading identity state failed")
            self._finish(items, error=Unavailable(f"Storing events failed: {exc}. Retry shortly.",
                                                  code="storage_error"))
            return
        for pid, uuids in seen.items():
            if uuids:
                recent.add_new(pid, uuids)
        st = self.stats
        st.batches += 1
        st.events_stored += n_stored
        st.duplicates += sum(r.duplicates for r in results)
        st.last_commit_seconds = time.perf_counter() - started
        st.batch_sizes.append(n_stored)
        if self.on_commit is not None:
            self.on_commit(n_stored)
        if len(st.batch_sizes) > 1000:
            del st.batch_sizes[:500]
        # the syncer fsyncs (once for every group that is waiting) and then answers the requests,
        # while this thread already works on the next group
        self._to_sync.put((items, results, record))

    def _resolve_table(self, item: _TableItem, changes: Changes, seen: set, recent_keys: set
                       ) -> tuple[pa.Table, int]:
        """Dedup and resolve persons for a worker-prepared request, as for an event list."""
        pid = item.project_id
        table = pa.ipc.open_stream(pa.py_buffer(item.table)).read_all()
        uuids = table.column("uuid").to_pylist()
        distinct_ids = table.column("distinct_id").to_pylist()
        timestamps = item.timestamps_us
        specials = dict(item.specials)
        keep: list[bool] | None = None
        for i, u in enumerate(uuids):
            if u in recent_keys or u in seen:
                if keep is None:
                    keep = [True] * len(uuids)
                keep[i] = False
                continue
            seen.add(u)
        if keep is not None:  # duplicates (SDK retries): drop their rows, renumber the rest
            rows = [i for i, k in enumerate(keep) if k]
            table = table.take(pa.array(rows, pa.int64()))
            distinct_ids = [distinct_ids[i] for i in rows]
            timestamps = [timestamps[i] for i in rows]
            renumber = {old: new for new, old in enumerate(rows)}
            specials = {renumber[i]: e for i, e in specials.items() if i in renumber}
        n = table.num_rows
        if not n:
            return table, 0
        person_ids, groups = self.identity.process_columns(pid, distinct_ids, timestamps, specials, changes)
        table = table.set_column(_PROJECT_ID, "project_id", pa.repeat(pa.scalar(pid, pa.int32()), n))
        table = table.set_column(_PERSON_ID, "person_id", pa.array(person_ids, pa.string()))
        if groups:
            for g, col in enumerate(GROUP_COLUMNS):
                values = [groups[i].get(g) if i in groups else None for i in range(n)]
                idx = table.schema.get_field_index(col)
                table = table.set_column(idx, col, pa.array(values, pa.string()))
        return table, n

    def _sync_loop(self) -> None:
        while True:
            first = self._to_sync.get()
            if first is _STOP:
                return
            groups = [first]
            stop = False
            while True:
                try:
                    nxt = self._to_sync.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                groups.append(nxt)
            self._log_groups(groups)
            if stop:
                return

    def _log_groups(self, groups: list) -> None:
        """Append each group's record to the log (in commit order), fsync once for all of them,
        then hand the records to the flusher and answer the requests."""
        logged: list = []  # (items, results, (table, rows, position) or None)
        settled = 0
        for items, results, record in groups:
            if record is None:
                logged.append((items, results, None))
                continue
            settled += 1
            stored, project_ids, pieces, now, rows, epoch = record
            if epoch != self._log_epoch:  # resolved against identity changes that were lost
                self._forget_later(stored, project_ids, pieces)
                self._finish(items, error=Unavailable("Storing events failed: an earlier write failed. "
                                                      "Retry shortly.", code="storage_error"))
                continue
            try:
                table = _group_table(stored, project_ids, pieces, now)
                payload = encode_parts(table, rows)
                with self._log_lock:
                    position = self.log.append(payload)
            except Exception as exc:  # the log could not be written: nothing of this group is durable
                log.exception("logging %d events failed", len(stored) + sum(p.num_rows for p in pieces))
                self._lose_identity()
                self._forget_later(stored, project_ids, pieces)
                self._finish(items, error=Unavailable(f"Storing events failed: {exc}. Retry shortly.",
                                                      code="storage_error"))
                continue
            logged.append((items, results, (table, rows, position)))
        try:
            if any(g[2] is not None for g in logged):
                with self._log_lock:
                    fd = self.log.sync_handle()
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except Exception as exc:  # cannot make the log durable: fail these requests
            log.exception("fsync of the ingestion log failed")
            self._lose_identity()
            for items, _, record in logged:
                if record is not None:
                    table = record[0]
                    self._forget_later([], [], [table])
                self._finish(items, error=Unavailable(f"Storing events failed: {exc}. Retry shortly.",
                                                      code="storage_error"))
        else:
            for items, results, record in logged:
                if record is not None:
                    self._hand_over(*record)
                self._finish(items, results=results)
        if settled:
            with self._cond:
                self._groups_settled += settled
                self._cond.notify_all()

    def _lose_identity(self) -> None:
        """A record could not be made durable: the in-memory identity holds its changes (and
        maybe later groups' built on them). Fail every record of this epoch and let the next
        commit reload the identity state (the syncer cannot take the commit lock: a job may
        hold it while it waits for the syncer)."""
        self.stats.failures += 1
        self._identity_stale = True  # before the epoch moves: a commit that sees the new epoch reloads
        self._log_epoch += 1

    def _forget_later(self, stored: list[Event], project_ids: list[int], tables: list[pa.Table]) -> None:
        """A group's events were not stored: before the next commit, drop their uuids from the
        dedup window (a retry must be stored, not taken for a duplicate). Called before the
        group's requests are answered, so any retry is committed after that."""
        pids, uuids = list(project_ids), [e.uuid for e in stored]
        for table in tables:
            pids += table.column("project_id").to_pylist()
            uuids += table.column("uuid").to_pylist()
        self._forget.append((pids, uuids))

    def _check_identity(self) -> None:
        """Undo what the syncer could not log (under the commit lock): forget the uuids of the
        failed groups, and reload the identity state if a record was lost."""
        while self._forget:
            pids, uuids = self._forget.pop()
            by_project: dict[int, list[str]] = {}
            for pid, uuid in zip(pids, uuids):
                by_project.setdefault(pid, []).append(uuid)
            for pid, project_uuids in by_project.items():
                self.recent.discard(pid, project_uuids)
        if self._identity_stale:
            self._identity_stale = False
            try:
                self.identity = self._identity_loader()
            except Exception:  # pragma: no cover - storage is gone; keep the old state
                log.exception("reloading identity state failed")

    def _hand_over(self, table: pa.Table, rows: ChangeRows, position: Position) -> None:
        with self._cond:
            self._acked = position
            self._cond.notify_all()
            self._unflushed += table.num_rows
            if self._oldest_unflushed is None:
                self._oldest_unflushed = time.monotonic()
        self._to_flush.put((table, rows, position))

    def _wait_for_room(self) -> None:
        """Backpressure: do not let unstored events pile up without bound."""
        if self._unflushed < self.max_unflushed_events:
            return
        self._sync_requested.set()
        self._to_flush.put(None)
        with self._cond:
            self._cond.wait_for(lambda: self._unflushed < self.max_unflushed_events, timeout=60)

    def _run_job(self, job: _Job) -> None:
        try:
            with self._cond:  # every logged group must be acknowledged, then stored, before the job
                self._cond.wait_for(lambda: self._groups_settled >= self._groups_logged)
            self.sync(timeout=None)
            self._check_identity()
            if job.exclusive:
                result, purge_log = job.fn(self.identity, None)
                if purge_log:
                    with self._log_lock:
                        self.log.purge()
                job.future.set_result(result)
                return
            changes = Changes()
            table = job.fn(self.identity, changes)
            if job.bulk:
                self.storage.append_part(table, change_rows(changes))
            else:
                self.storage.append(table, change_rows(changes))
        except Exception as exc:
            self.identity = self._identity_loader()
            if job.exclusive:  # maintenance: the caller gets its own error
                job.future.set_exception(exc)
                return
            log.exception("bulk write failed")
            self.stats.failures += 1
            job.future.set_exception(exc if isinstance(exc, Unavailable) else
                                     Unavailable(f"Storing events failed: {exc}", code="storage_error"))
            return
        self.stats.batches += 1
        self.stats.events_stored += table.num_rows
        job.future.set_result(table.num_rows)

    def _finish(self, items: list[_Item], results: list[WriteResult] | None = None,
                error: Exception | None = None) -> None:
        with self._pending_lock:
            self._pending -= sum(len(i.events) for i in items)
        in_loops: dict[Any, list] = {}
        for i, item in enumerate(items):
            future = item.future
            if isinstance(future, asyncio.Future):  # submitted from an event loop: resolved there
                in_loops.setdefault(future.get_loop(), []).append((future, None if error else results[i]))
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[i])
        for loop, pairs in in_loops.items():  # one wake-up of each loop for the whole group
            try:
                loop.call_soon_threadsafe(_resolve, pairs, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    # -- the flusher thread --------------------------------------------------------------
    def _flush_loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[tuple[pa.Table, ChangeRows, Position]] = []
            first_at = None
            n = 0
            while True:
                timeout = None if first_at is None else max(0.0, self.flush_interval - (time.monotonic() - first_at))
                if first_at is not None and (n >= self.flush_events or self._sync_requested.is_set() or timeout == 0):
                    break
                try:
                    item = self._to_flush.get(timeout=timeout)
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    while True:  # everything still queued
                        try:
                            more = self._to_flush.get_nowait()
                        except queue.Empty:
                            break
                        if more is not None and more is not _STOP:
                            batch.append(more)
                    break
                if item is None:  # a wake-up from sync()
                    if first_at is None and not batch:
                        self._sync_requested.clear()
                        with self._cond:
                            self._cond.notify_all()
                        continue
                    continue
                batch.append(item)
                n += item[0].num_rows
                if first_at is None:
                    first_at = time.monotonic()
            if batch:
                self._store(batch)
            self._sync_requested.clear()
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """Fold the store's own log into its files when ingestion is quiet (or the log is big)."""
        now = time.monotonic()
        quiet = self._to_flush.empty() and self._unflushed == 0
        due = self._flushed_since_checkpoint >= self.checkpoint_events or \
            (quiet and self._flushed_since_checkpoint and now - self._last_checkpoint >= self.checkpoint_interval)
        if not due:
            return
        try:
            self.storage.checkpoint()
        except Exception:  # a checkpoint that fails is retried later; nothing is lost
            log.exception("checkpoint failed")
            return
        self._last_checkpoint = now
        self._flushed_since_checkpoint = 0

    def _store(self, batch: list[tuple[pa.Table, ChangeRows, Position]]) -> None:
        rows = ChangeRows()
        for _, r, _ in batch:
            rows.merge(r)
        table = pa.concat_tables([t for t, _, _ in batch])
        position = batch[-1][2]
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                self.storage.append(table, rows, wal_position=position, **self._flush_options)
                break
            except Exception as exc:  # the events are safe in the log: keep trying
                log.exception("storing %d logged events failed; retrying", table.num_rows)
                self.stats.failures += 1
                with self._cond:
                    self._flush_error = exc
                    self._cond.notify_all()
                time.sleep(delay)
                delay = min(delay * 2, 30)
        self.stats.flushes += 1
        self.stats.events_flushed += table.num_rows
        self._flushed_since_checkpoint += table.num_rows
        self.stats.last_flush_seconds = time.perf_counter() - started
        with self._cond:
            self._flush_error = None
            self._flushed = position
            self._unflushed -= table.num_rows
            self._oldest_unflushed = None if self._unflushed <= 0 else time.monotonic()
            self._cond.notify_all()
        with self._log_lock:
            self.log.release(position)
