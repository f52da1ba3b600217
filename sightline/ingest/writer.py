"""The group-commit writer: the only code that changes events and persons.

Requests hand their normalized events to :meth:`Writer.submit` and wait on the returned
future. One thread takes everything queued, resolves identities, and appends it all to
storage in **one** transaction; only after that commit returns are the futures resolved, so
an HTTP 200 always means "durable". Many concurrent requests share one commit, which is what
makes durability cheap.

Duplicate events (same project and uuid, as SDKs send on retry) are dropped against a window
of recently stored uuids held in memory and warmed from storage at start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from sightline.errors import Unavailable
from sightline.ingest.normalize import Event
from sightline.persons.identity import Changes, IdentityState
from sightline.storage.base import Storage
from sightline.storage.schema import events_to_arrow

log = logging.getLogger("sightline.writer")
UTC = timezone.utc

DEDUP_WINDOW = 1_000_000
DEDUP_WARM_PERIOD = timedelta(hours=24)


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
    last_commit_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)  # recent commit sizes (bounded)


@dataclass
class _Item:
    project_id: int
    events: list[Event]
    future: Future


@dataclass
class _Job:
    """Bulk work run in the writer thread: ``fn(identity, changes)`` returns the events table."""

    fn: Callable
    future: Future
    bulk: bool = True


_STOP = object()


class RecentUuids:
    """A bounded set of (project_id, uuid) with first-in-first-out eviction."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._set: set[tuple[int, str]] = set()
        self._order: deque[tuple[int, str]] = deque()

    def __contains__(self, key: tuple[int, str]) -> bool:
        return key in self._set

    def __len__(self) -> int:
        return len(self._set)

    def add(self, key: tuple[int, str]) -> None:
        if key in self._set:
            return
        self._set.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._set.discard(self._order.popleft())


class Writer:
    def __init__(self, storage: Storage, identity_loader: Callable[[], IdentityState], *,
                 max_batch_events: int = 50_000, max_pending_events: int = 500_000,
                 dedup_window: int = DEDUP_WINDOW) -> None:
        self.storage = storage
        self._identity_loader = identity_loader
        self.identity = identity_loader()
        self.max_batch_events = max_batch_events
        self.max_pending_events = max_pending_events
        self.recent = RecentUuids(dedup_window)
        for key in reversed(list(storage.recent_event_uuids(datetime.now(UTC) - DEDUP_WARM_PERIOD,
                                                            dedup_window))):
            self.recent.add((key[0], key[1]))
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sightline-writer", daemon=True)
        self._running = False
        self._last_commit_at = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._thread.start()

    def stop(self) -> None:
        """Write everything already queued, then stop the thread."""
        if not self._running:
            return
        self._running = False
        self._queue.put(_STOP)
        self._thread.join()

    @property
    def pending_events(self) -> int:
        return self._pending

    # -- submitting ----------------------------------------------------------------------
    def submit(self, project_id: int, events: list[Event]) -> Future:
        future: Future = Future()
        if not self._running:
            future.set_exception(Unavailable("Sightline is shutting down; retry shortly."))
            return future
        with self._pending_lock:
            if self._pending + len(events) > self.max_pending_events and self._pending:
                future.set_exception(Unavailable(
                    "Ingestion is behind: too many events are waiting to be written. Retry shortly.",
                    code="ingestion_backpressure"))
                return future
            self._pending += len(events)
        self._queue.put(_Item(project_id, events, future))
        return future

    def write(self, project_id: int, events: list[Event], timeout: float | None = None) -> WriteResult:
        """Blocking submit, for the Python API and the CLI."""
        return self.submit(project_id, events).result(timeout)

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                break
            if isinstance(first, _Job):
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
            self._commit(items)
        # drain anything that raced with stop
        while True:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(nxt, _Job):
                self._run_job(nxt)
            elif nxt is not _STOP:
                self._commit([nxt])

    def submit_job(self, fn: Callable, *, bulk: bool = True) -> Future:
        """Run ``fn(identity, changes) -> events table`` in the writer thread and store the
        result in one transaction (as an immutable part when ``bulk``). The future gives the
        number of events stored."""
        future: Future = Future()
        if not self._running:
            future.set_exception(Unavailable("Sightline is shutting down."))
            return future
        self._queue.put(_Job(fn, future, bulk))
        return future

    def run_job(self, fn: Callable, *, bulk: bool = True) -> int:
        return self.submit_job(fn, bulk=bulk).result()

    def _run_job(self, job: _Job) -> None:
        changes = Changes()
        try:
            table = job.fn(self.identity, changes)
            if job.bulk:
                self.storage.append_part(table, changes)
            else:
                self.storage.append(table, changes)
        except Exception as exc:
            log.exception("bulk write failed")
            self.stats.failures += 1
            self.identity = self._identity_loader()
            job.future.set_exception(exc if isinstance(exc, Unavailable) else
                                     Unavailable(f"Storing events failed: {exc}", code="storage_error"))
            return
        self.stats.batches += 1
        self.stats.events_stored += table.num_rows
        self._last_commit_at = time.monotonic()
        job.future.set_result(table.num_rows)

    def _commit(self, items: list[_Item]) -> None:
        changes = Changes()
        stored: list[Event] = []
        project_ids: list[int] = []
        results: list[WriteResult] = []
        seen: set[tuple[int, str]] = set()
        identity = self.identity
        recent = self.recent
        try:
            for item in items:
                dup = 0
                pid = item.project_id
                for event in item.events:
                    key = (pid, event.uuid)
                    if key in recent or key in seen:
                        dup += 1
                        continue
                    seen.add(key)
                    identity.process(pid, event, changes)
                    stored.append(event)
                    project_ids.append(pid)
                results.append(WriteResult(len(item.events) - dup, dup))
            table = events_to_arrow(stored, project_ids, datetime.now(UTC))
            started = time.perf_counter()
            self.storage.append(table, changes)
            elapsed = time.perf_counter() - started
        except Exception as exc:  # storage failure: nothing of this batch is stored
            log.exception("write of %d events failed", len(stored))
            self.stats.failures += 1
            try:
                self.identity = self._identity_loader()  # drop the uncommitted identity changes
            except Exception:  # pragma: no cover - storage is gone; keep the old state
                log.exception("reloading identity state failed")
            self._finish(items, error=Unavailable(f"Storing events failed: {exc}. Retry shortly.",
                                                  code="storage_error"))
            return
        for key in seen:
            recent.add(key)
        st = self.stats
        st.batches += 1
        st.events_stored += len(stored)
        st.duplicates += sum(r.duplicates for r in results)
        st.last_commit_seconds = elapsed
        st.batch_sizes.append(len(stored))
        if len(st.batch_sizes) > 1000:
            del st.batch_sizes[:500]
        self._last_commit_at = time.monotonic()
        self._finish(items, results=results)

    def _finish(self, items: list[_Item], results: list[WriteResult] | None = None,
                error: Exception | None = None) -> None:
        with self._pending_lock:
            self._pending -= sum(len(i.events) for i in items)
        for i, item in enumerate(items):
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(results[i])
