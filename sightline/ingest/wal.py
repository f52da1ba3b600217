"""The ingestion log: where an event is durable before it is acknowledged.

Each group of requests becomes one record, appended and fsync'd (group commit) before any of
their HTTP 200s go out. The records are then stored in the event store in large batches, in the
background; the store remembers the log position it holds, so at start the records after it are
stored again (replay) and none is lost or applied twice. A record torn by a crash fails its
checksum and ends the replay: it was never acknowledged.

Layout: ``<data>/wal/<segment:08d>.log`` files of records
``b"SL" | length (u32) | crc32 (u32) | payload``. Segments rotate at ``segment_bytes`` and are
deleted once the store holds everything in them.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from sightline.persons.identity import ChangeRows

MAGIC = b"SL"
HEADER = struct.Struct("<2sII")
Position = tuple[int, int]


_IPC_OPTIONS = pa.ipc.IpcWriteOptions()

try:  # ISA-L's crc32: the same checksum as zlib's, several times faster on a group's record
    from isal.isal_zlib import crc32 as _crc32  # type: ignore[import-not-found]
except Exception:  # pragma: no cover - depends on the environment
    _crc32 = zlib.crc32


def encode_parts(events: pa.Table, changes: ChangeRows) -> list:
    """A record's payload as the buffers :meth:`IngestLog.append` writes one after the other
    (the bytes of :func:`encode`, without copying the Arrow stream into one ``bytes``)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.RecordBatchStreamWriter(sink, events.schema, options=_IPC_OPTIONS) as writer:
        writer.write_table(events)
    ipc = sink.getvalue()
    return [struct.pack("<I", ipc.size), ipc, changes.to_json()]


def encode(events: pa.Table, changes: ChangeRows) -> bytes:
    return b"".join(bytes(part) for part in encode_parts(events, changes))


def decode(payload: bytes) -> tuple[pa.Table, ChangeRows]:
    (n,) = struct.unpack_from("<I", payload)
    table = pa.ipc.open_stream(pa.py_buffer(payload[4:4 + n])).read_all()
    return table, ChangeRows.from_json(payload[4 + n:])


class IngestLog:
    def __init__(self, directory: str | Path, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        segments = self.segments()
        self.segment = segments[-1] if segments else 1
        self._fh = open(self._path(self.segment), "ab")
        self.offset = self._fh.tell()

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:08d}.log"

    def segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.log") if p.stem.isdigit())

    @property
    def position(self) -> Position:
        return (self.segment, self.offset)

    def append(self, payload: "bytes | list") -> Position:
        """Write one record (not yet synced); returns the position just after it. ``payload``
        is bytes or a list of bytes-like parts written as one record (:func:`encode_parts`)."""
        if self.offset >= self.segment_bytes:
            self._rotate()
        parts = [payload] if isinstance(payload, (bytes, bytearray)) else payload
        length = 0
        crc = 0
        for part in parts:
            length += len(part)
            crc = _crc32(part, crc)
        self._fh.write(HEADER.pack(MAGIC, length, crc))
        for part in parts:
            self._fh.write(part)
        self._fh.flush()  # to the OS; sync_handle() makes it durable
        self.offset += HEADER.size + length
        return self.position

    def sync_handle(self) -> int:
        """A duplicate descriptor of the current segment, to fsync without holding up appends."""
        return os.dup(self._fh.fileno())

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def _rotate(self) -> None:
        self.sync()
        self._fh.close()
        self.segment += 1
        self._fh = open(self._path(self.segment), "ab")
        self.offset = 0
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def records_after(self, position: Position | None) -> Iterator[tuple[bytes, Position]]:
        """Every whole record after ``position``; a torn tail is cut off (it was never acknowledged)."""
        start_seg, start_off = position or (0, 0)
        for seg in self.segments():
            if seg < start_seg:
                continue
            path = self._path(seg)
            with open(path, "rb") as fh:
                data = fh.read()
            off = start_off if seg == start_seg else 0
            while off + HEADER.size <= len(data):
                magic, length, crc = HEADER.unpack_from(data, off)
                body = data[off + HEADER.size: off + HEADER.size + length]
                if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
                    break
                off += HEADER.size + length
                yield body, (seg, off)
            if off < len(data):  # a torn record from a crash: drop it so appends stay readable
                with open(path, "r+b") as fh:
                    fh.truncate(off)
                if seg == self.segment:
                    self._fh.close()
                    self._fh = open(path, "ab")
                    self.offset = off

    def release(self, position: Position) -> None:
        """Delete the segments the store no longer needs (all before ``position``'s segment)."""
        for seg in self.segments():
            if seg < position[0] and seg != self.segment:
                self._path(seg).unlink(missing_ok=True)

    def purge(self) -> None:
        """Start a new segment and delete every older one. Only when the store holds every
        record (the writer checks): used after deletions so no removed data stays in the log."""
        self._rotate()
        self.release(self.position)

    def close(self) -> None:
        try:
            self.sync()
        finally:
            self._fh.close()
