"""`sightline export`: filters by project, event and date range (absolute or relative), rows in
time order, Parquet and JSON lines, and memory that does not grow with the export's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from livesrv import ROOT

import sightline
from sightline.cli import main

NOW = datetime.now(UTC).replace(microsecond=0)


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def sample(n: int, prefix: str) -> list[dict]:
    """Events over ~300 days, none within an hour of the relative bounds the tests use."""
    out = []
    for i in range(n):
        age = timedelta(days=(i * 13) % 300, hours=(i * 5) % 24 + 0.5)
        if abs(age - timedelta(days=7)) < timedelta(hours=2):
            age += timedelta(hours=3)
        out.append({"event": ("$pageview", "purchase", "signed_up")[i % 3], "distinct_id": f"{prefix}{i % 31}",
                    "uuid": f"00000000-0000-4000-8000-{ord(prefix):04x}{i:08d}",
                    "timestamp": (NOW - age).isoformat(), "properties": {"i": i, "amount": i % 50}})
    return out


@pytest.fixture(scope="module")
def two_projects(tmp_path_factory):
    from sightline.ingest.bulk import import_events

    data = tmp_path_factory.mktemp("export") / "d"
    a, b = sample(3000, "a"), sample(500, "b")
    with sightline.open(data) as core:
        second = core.meta.create_project("Second")
        import_events(core, a[:2500], progress=False, batch_rows=900)   # Parquet parts
        core.ingest(a[2500:])                                           # hot rows
        import_events(core, b, progress=False, project_id=second.id)
    return data, a, b, second.id


def ts(e: dict) -> datetime:
    return datetime.fromisoformat(e["timestamp"])


def test_filters_order_and_both_formats(two_projects, tmp_path):
    data, a, b, second = two_projects
    after = "2000-01-01"
    # project 1, one event, from an absolute date to a relative one
    lo = (NOW - timedelta(days=120)).date().isoformat()
    r = run("export", tmp_path / "p.jsonl", "--data-dir", data, "--event", "purchase", "--after", lo,
            "--before", "-7d")
    assert r.exit_code == 0, r.output
    got = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    lo_ts = datetime.fromisoformat(lo).replace(tzinfo=UTC)
    want = sorted((e for e in a if e["event"] == "purchase" and lo_ts <= ts(e) < NOW - timedelta(days=7)),
                  key=lambda e: (ts(e), e["uuid"]))
    assert len(want) > 50 and f"Exported {len(want):,} events" in r.output
    assert [g["uuid"] for g in got] == [e["uuid"] for e in want]          # in time order
    assert [g["properties"]["i"] for g in got] == [e["properties"]["i"] for e in want]
    assert all(g["timestamp"].endswith("Z") for g in got)
    assert {g["distinct_id"] for g in got} <= {e["distinct_id"] for e in a}

    # the other project, Parquet, everything
    r = run("export", tmp_path / "b.parquet", "--data-dir", data, "--project", second, "--after", after)
    assert r.exit_code == 0, r.output
    table = pq.read_table(tmp_path / "b.parquet")
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.column("uuid").to_pylist() == [e["uuid"] for e in sorted(b, key=lambda e: (ts(e), e["uuid"]))]
    assert [json.loads(p)["i"] for p in table.column("properties").to_pylist()] == \
        [e["properties"]["i"] for e in sorted(b, key=lambda e: (ts(e), e["uuid"]))]

    # small windows give the same file as one big window
    from sightline.ops.export import export_events

    with sightline.open(data, read_only=True) as core:
        n = export_events(core, tmp_path / "w.jsonl", fmt="jsonl", window_rows=37, batch_rows=11)
        m = export_events(core, tmp_path / "x.jsonl", fmt="jsonl")
    assert n == m == len(a)
    assert (tmp_path / "w.jsonl").read_bytes() == (tmp_path / "x.jsonl").read_bytes()

    # bad input: precise errors, no file left behind
    for args, text in ((("--before", "last tuesday"), "--before"), (("--project", "99"), "does not exist")):
        r = run("export", tmp_path / "bad.jsonl", "--data-dir", data, *args)
        assert r.exit_code == 2 and text in r.output
        assert not (tmp_path / "bad.jsonl").exists() and not (tmp_path / "bad.jsonl.partial").exists()


MEASURE = """
import json, sys
import sightline
from sightline.ops.export import export_events

data, out, fmt, before, window = sys.argv[1:]
with sightline.open(data, read_only=True) as core:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM): measure the export alone
    n = export_events(core, out, fmt=fmt, before=before or None, window_rows=int(window))
    peak = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({"rows": n, "peak_mb": peak / 1024}))
"""


def _export_peak_mb(data: Path, out: Path, fmt: str, before: str = "", window: int = 100_000) -> tuple[float, int]:
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(data), str(out), fmt, before, str(window)],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(), timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    return result["peak_mb"], result["rows"]


def test_memory_does_not_grow_with_the_export(tmp_path):
    """300k events: exporting all of them takes about the memory of exporting 90k."""
    from sightline.ingest.bulk import import_files

    n = 300_000
    start = datetime(2025, 1, 1, tzinfo=UTC)
    step_us = 10 * 86_400 * 1_000_000 // n                         # ten days
    rows = pa.table({
        "event": pa.array(["$pageview", "purchase", "signed_up"] * (n // 3)),
        "distinct_id": pa.array([f"user-{i % 5000}" for i in range(n)]),
        "timestamp": pa.array([start.timestamp() * 1e6 + i * step_us for i in range(n)], pa.int64())
        .cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
        "properties": pa.array([json.dumps({"$current_url": f"https://example.com/page/{i % 977}",
                                            "i": i, "note": "x" * (i % 64)}) for i in range(n)]),
    })
    pq.write_table(rows, tmp_path / "in.parquet")
    data = tmp_path / "d"
    with sightline.open(data) as core:
        assert import_files(core, [tmp_path / "in.parquet"], progress=False).loaded == n
    # 30k events a day: windows of 3 days (90k events) in both exports; the full one has 3.3x more
    part = (start + timedelta(days=3)).isoformat()
    for fmt in ("jsonl", "parquet"):
        # small windows (20k rows): the per-window memory is small next to what holding all would take
        small_rss, small_n = _export_peak_mb(data, tmp_path / f"small.{fmt}", fmt, before=part, window=20_000)
        full_rss, full_n = _export_peak_mb(data, tmp_path / f"full.{fmt}", fmt, window=20_000)
        assert full_n == n and small_n == 3 * n // 10
        size_mb = (tmp_path / f"full.{fmt}").stat().st_size / 1e6
        print(fmt, round(small_rss), round(full_rss), round(size_mb))
        # holding the 300k rows (90 MB of JSON lines, about as much as Arrow strings) would grow
        # the peak by ~100 MB or more; streaming stays within DuckDB's and the allocator's noise
        assert full_rss - small_rss < 55, (fmt, small_rss, full_rss, size_mb)
    with open(tmp_path / "full.jsonl") as fh:
        assert sum(1 for _ in fh) == n
    assert pq.ParquetFile(tmp_path / "full.parquet").metadata.num_rows == n
    if os.environ.get("SIGHTLINE_EXPORT_MEMORY_PROBE"):  # one window for everything: memory grows
        print("one window", _export_peak_mb(data, tmp_path / "one.jsonl", "jsonl", window=10 ** 9))
