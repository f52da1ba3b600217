"""The ingestion log's record written from parts (the writer's path) is byte for byte the record
written from one ``bytes`` payload, and reads back to the same table and changes."""

from __future__ import annotations

import zlib
from datetime import datetime, timezone
from pathlib import Path

from sightline.ingest import wal
from sightline.ingest.normalize import Event
from sightline.persons.identity import Changes, IdentityState, change_rows
from sightline.storage.schema import events_to_arrow

UTC = timezone.utc


def _group(n: int):
    events = [Event(uuid=f"0190a8c2-0000-7000-8000-{i:012d}", event="$pageview" if i % 3 else "signed_up",
                    distinct_id=f"user-{i % 7}", timestamp=datetime(2026, 11, 27, 12, 0, i % 60, i, tzinfo=UTC),
                    properties={"i": i, "text": "é" * (i % 5)}, properties_json=f'{{"i":{i},"text":"{"é" * (i % 5)}"}}')
              for i in range(n)]
    changes = Changes()
    IdentityState().process_batch(1, events, changes)
    return events_to_arrow(events, [1] * n, datetime(2026, 11, 27, tzinfo=UTC)), change_rows(changes)


def test_parts_record_equals_bytes_record(tmp_path: Path) -> None:
    a, b = wal.IngestLog(tmp_path / "a"), wal.IngestLog(tmp_path / "b")
    positions = []
    for n in (1, 37, 300):
        table, rows = _group(n)
        parts = wal.encode_parts(table, rows)
        whole = wal.encode(table, rows)
        assert b"".join(bytes(p) for p in parts) == whole
        positions.append((a.append(parts), b.append(whole)))
    a.close()
    b.close()
    assert all(pa_ == pb for pa_, pb in positions)
    data = (tmp_path / "a" / "00000001.log").read_bytes()
    assert data == (tmp_path / "b" / "00000001.log").read_bytes()
    # the header's checksum is zlib's crc32 of the payload, as the reader checks it
    magic, length, crc = wal.HEADER.unpack_from(data, 0)
    assert magic == wal.MAGIC and crc == zlib.crc32(data[wal.HEADER.size: wal.HEADER.size + length])


def test_parts_record_reads_back(tmp_path: Path) -> None:
    log = wal.IngestLog(tmp_path)
    table, rows = _group(50)
    log.append(wal.encode_parts(table, rows))
    log.close()
    records = list(wal.IngestLog(tmp_path).records_after(None))
    assert len(records) == 1
    got_table, got_rows = wal.decode(records[0][0])
    assert got_table.equals(table)
    assert got_rows.to_json() == rows.to_json()
    assert sorted(got_rows.distinct_ids) == sorted(rows.distinct_ids) and len(got_rows.persons) == 7
