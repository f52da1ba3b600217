"""Capture worker processes: decode, validate and normalize capture requests beside the server.

``sightline serve --capture-workers N`` starts N helper processes. For every capture request the
server's event loop hands the raw body to one of them (through its stdin/stdout pipes); the
helper runs exactly the inline path's steps (:func:`sightline.ingest.decode.decode_capture`,
:func:`~sightline.ingest.normalize.request_token`, :func:`~sightline.ingest.normalize.normalize_batch`,
the default ``$ip`` rule) and answers with the events as one Arrow IPC table (the writer's
batch schema, persons not yet resolved) plus what the writer needs to resolve persons.

The server keeps everything that needs its state: the token's project, the writer (dedup,
persons, the ingestion log, fsync) and the HTTP answer. So the durability rule is unchanged:
a request is answered 200 only after the writer has fsync'd its events.

Anything unusual takes the inline path in the server, with the same result as without
workers: a request the helper could not prepare (any error: bad input, missing token...),
a project that stores client IPs, a helper that died or is not started yet.

Why: the server is one Python process, and parsing JSON into objects holds its interpreter
lock. With helpers, parsing runs on every core while the server only moves bytes.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import pyarrow as pa

log = logging.getLogger("sightline.capture_pool")
UTC = timezone.utc
_LEN = struct.Struct("<I")
PROTOCOL = pickle.HIGHEST_PROTOCOL


@dataclass
class Prepared:
    """One capture request, decoded and normalized by a helper (or in process)."""

    token: str
    received: int                  # events in the request
    stored: int                    # valid events (rows of ``table``)
    rejected: list                 # list[Rejection]
    table: bytes                   # Arrow IPC stream, EVENT_BATCH_SCHEMA; person_id and groups empty
    ts_us: list[int]               # exact epoch microseconds of each row's timestamp
    specials: list = field(default_factory=list)  # [(row, Event)] needing identity's full rules
    had_ip: bool = False           # some event carried $ip (dropped: the default rule)


def prepare(body: bytes, query: Mapping[str, str], content_type: str | None,
            content_encoding: str | None, legacy: bool, max_bytes: int,
            now: datetime | None = None) -> Prepared:
    """The inline capture path's decode → token → normalize, as a table. Raises what it raises."""
    from sightline.ingest.decode import decode_capture
    from sightline.ingest.normalize import normalize_batch, request_token
    from sightline.persons.identity import needs_full_process
    from sightline.storage.schema import epoch_micros, events_to_arrow
    from sightline.web.capture import sent_at_of
    from sightline.web.client_ip import apply_ip_policy

    req = decode_capture(body, query=query, content_type=content_type, content_encoding=content_encoding,
                         legacy=legacy, max_bytes=max_bytes)
    token = request_token(req.token or query.get("token") or query.get("api_key"), req.events)
    now = now or datetime.now(UTC)
    batch = normalize_batch(req.events, now=now, sent_at=sent_at_of(req), copy=False)
    events = batch.events
    had_ip = False
    for event in events:
        if "$ip" in event.properties:
            had_ip = True
            break
    if had_ip:
        apply_ip_policy(events, None)
    specials = [(i, e) for i, e in enumerate(events) if needs_full_process(e)]
    table = events_to_arrow(events, [0] * len(events), now)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Prepared(token=token, received=len(req.events), stored=len(events), rejected=batch.rejected,
                    table=sink.getvalue().to_pybytes(), ts_us=[epoch_micros(e.timestamp) for e in events],
                    specials=specials, had_ip=had_ip)


def read_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


# --------------------------------------------------------------------------------------
# the helper process
# --------------------------------------------------------------------------------------

def _read_exact(stream, n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def worker_main() -> None:
    """Serve requests from stdin until it closes (the server stopped or died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop (stdin closes)
    gc.set_threshold(100_000, 50, 100)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answer pipe
    try:
        import pyarrow  # noqa: F401  (warm the imports before the first request)

        pa.array([0], pa.int64())
    except Exception:  # pragma: no cover
        pass
    while True:
        header = _read_exact(inp, _LEN.size)
        if header is None:
            return
        data = _read_exact(inp, _LEN.unpack(header)[0])
        if data is None:
            return
        try:
            answer: tuple = ("ok", prepare(**pickle.loads(data)))
        except Exception as exc:  # the server redoes the request inline, for the exact answer
            answer = ("inline", type(exc).__name__)
        try:
            payload = pickle.dumps(answer, protocol=PROTOCOL)
        except Exception as exc:  # pragma: no cover - e.g. an unpicklable value in a special event
            payload = pickle.dumps(("inline", type(exc).__name__), protocol=PROTOCOL)
        out.write(_LEN.pack(len(payload)) + payload)
        out.flush()


# --------------------------------------------------------------------------------------
# the server's side
# --------------------------------------------------------------------------------------

class WorkerGone(Exception):
    """The helper stopped before answering."""


def _spawn() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sightline.ingest.capture_pool"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, close_fds=True)


class _Worker:
    """One helper process: requests go down its stdin, answers come back in order on its stdout."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.alive = proc.poll() is None
        self._transport: asyncio.WriteTransport | None = None
        self.reader: asyncio.Task | None = None

    async def attach(self) -> None:
        """Connect the pipes to the running event loop."""
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=2 ** 31 - 1)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), self.proc.stdout)
        self._transport, _ = await loop.connect_write_pipe(asyncio.Protocol, self.proc.stdin)
        self.reader = asyncio.ensure_future(self._read_loop(stream))

    async def _read_loop(self, stream: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await stream.readexactly(_LEN.size)
                data = await stream.readexactly(_LEN.unpack(header)[0])
                fut = self.waiting.popleft()
                if not fut.done():
                    fut.set_result(data)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, asyncio.CancelledError):
            pass
        except Exception:  # pragma: no cover
            log.exception("capture worker pipe failed")
        finally:
            self.alive = False
            while self.waiting:
                fut = self.waiting.popleft()
                if not fut.done():
                    fut.set_exception(WorkerGone())

    def send(self, payload: bytes) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if self._transport is None or self._transport.is_closing():
            fut.set_exception(WorkerGone())
            return fut
        self.waiting.append(fut)
        self._transport.write(_LEN.pack(len(payload)) + payload)
        return fut

    def close(self) -> None:
        """Close the helper's stdin: it exits once it has answered what it holds."""
        self.alive = False
        if self._transport is not None:
            try:
                self._transport.close()
            except Exception:  # e.g. the event loop is already closed
                pass
        try:
            self.proc.stdin.close()
        except Exception:  # pragma: no cover
            pass
        if self.reader is not None and not self.reader.done():
            try:
                self.reader.cancel()
            except Exception:  # pragma: no cover - the loop is closed
                pass


class CapturePool:
    """N helper processes. :meth:`spawn` starts them (before the event loop runs, so they
    import while the server starts); the first request connects them to the loop."""

    def __init__(self, workers: int) -> None:
        self.size = workers
        self._workers: list[_Worker] = []
        self._attaching: asyncio.Task | None = None
        self._restarts = 0
        self.max_restarts = 20
        self.prepared = 0   # requests prepared by helpers
        self.inline = 0     # requests a helper handed back (or none could take)

    def spawn(self) -> None:
        while len(self._workers) < self.size:
            self._workers.append(_Worker(_spawn()))

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.alive]

    async def _attach(self) -> None:
        self.spawn()
        for w in self._workers:
            if w.reader is None:
                try:
                    await w.attach()
                except Exception:  # pragma: no cover
                    log.exception("could not connect a capture worker")
                    w.close()

    def _replace_dead(self) -> None:
        for i, w in enumerate(self._workers):
            if not w.alive and self._restarts < self.max_restarts:
                self._restarts += 1
                log.warning("capture worker %d stopped; starting a new one", w.proc.pid)
                w.close()
                try:
                    w.proc.wait(timeout=1)
                except Exception:  # pragma: no cover
                    pass
                try:
                    self._workers[i] = _Worker(_spawn())
                except Exception:  # pragma: no cover
                    log.exception("could not restart a capture worker")
                    return
                self._attaching = None

    async def prepare(self, body: bytes, query: Mapping[str, str], content_type: str | None,
                      content_encoding: str | None, legacy: bool, max_bytes: int) -> Prepared | None:
        """A helper's :class:`Prepared`, or ``None``: do this request inline."""
        if self._attaching is None:
            self._attaching = asyncio.ensure_future(self._attach())
        if not self._attaching.done():
            await self._attaching
        live = [w for w in self._workers if w.alive and w.reader is not None]
        if len(live) < len(self._workers):
            self._replace_dead()
        if not live:
            self.inline += 1
            return None
        worker = min(live, key=lambda w: len(w.waiting))
        payload = pickle.dumps({"body": body, "query": dict(query), "content_type": content_type,
                                "content_encoding": content_encoding, "legacy": legacy,
                                "max_bytes": max_bytes}, protocol=PROTOCOL)
        try:
            data = await worker.send(payload)
        except (WorkerGone, ConnectionError, RuntimeError):
            self.inline += 1
            return None
        try:
            status, value = pickle.loads(data)
        except Exception:  # pragma: no cover - a helper of another version
            log.exception("could not read a capture worker's answer")
            status, value = "inline", None
        if status != "ok":
            self.inline += 1
            return None
        self.prepared += 1
        return value

    def close(self) -> None:
        """Close the helpers' pipes: they finish what they hold and exit."""
        if self._attaching is not None:
            self._attaching.cancel()
        for w in self._workers:
            w.close()
        for w in self._workers:
            try:
                w.proc.wait(timeout=5)
            except Exception:  # pragma: no cover
                w.proc.kill()
        self._workers = []


if __name__ == "__main__":
    # run the module's own copy (not __main__'s) so pickled answers name sightline.ingest.capture_pool
    from sightline.ingest.capture_pool import worker_main as _main

    _main()
