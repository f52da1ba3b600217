#!/usr/bin/env python
"""Bulk import throughput: ``sightline import FILE.parquet`` against DuckDB's own copy of the file.

For each Parquet file (default: the 1M- and 10M-event files ``benchmarks/queries.py --data-dir
/tmp/slbench`` generates), in one process and one after the other:

1. **sightline**: :func:`sightline.ingest.bulk.import_files` into a fresh data directory (the
   code path of ``sightline import``: validation, dedup, persons, partitioned Parquet parts,
   the final merge of each partition's files), timed from open to close;
2. **reference**: DuckDB alone reads the same file and writes it back as zstd Parquet sorted by
   ``(event, timestamp)`` (``COPY (SELECT ... ORDER BY event, timestamp) TO ... (FORMAT
   parquet, COMPRESSION zstd)``), i.e. the floor of what storing the file costs on this machine.

The ratio sightline / reference (events/s) is the figure to compare across runs on a shared
machine; the absolute events/s move with the load. Run from the repository root::

    .venv/bin/python benchmarks/import_.py                       # 1M and 10M files
    .venv/bin/python benchmarks/import_.py --files /path/a.parquet --repeat 3
    .venv/bin/python benchmarks/import_.py --only 1m --profile   # cProfile top functions too
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_FILES = {
    "1m": "/tmp/slbench/sl-e1000000-p100000-d30-s42-g1/events.parquet",
    "10m": "/tmp/slbench/sl-e10000000-p1000000-d30-s42-g1/events.parquet",
}


def _cpu() -> float:
    """CPU seconds of this process so far (all threads, user + system)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_sightline(path: Path, work: Path, profile: bool = False) -> tuple[float, int, float]:
    import sightline
    from sightline.ingest.bulk import import_files

    data = work / "sl-data"
    shutil.rmtree(data, ignore_errors=True)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    cpu0 = _cpu()
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    core = sightline.open(data)
    try:
        summary = import_files(core, [path], progress=False)
    finally:
        core.close()
    seconds = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    if prof:
        import pstats

        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    if summary.rejected_total:
        print(f"  rejected: {dict(summary.rejected)}")
    shutil.rmtree(data, ignore_errors=True)
    return seconds, summary.loaded, cpu


def run_reference(path: Path, work: Path) -> tuple[float, int, float]:
    import duckdb

    out = work / "ref.parquet"
    cpu0 = _cpu()
    t0 = time.perf_counter()
    con = duckdb.connect()
    src = str(path).replace("'", "''")
    n = con.execute(f"COPY (SELECT * FROM read_parquet('{src}') ORDER BY event, timestamp) "
                    f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)").fetchone()[0]
    con.close()
    seconds = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    out.unlink(missing_ok=True)
    return seconds, int(n), cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--files", nargs="*", type=Path, help="Parquet files to import (default: the 1M and 10M files)")
    p.add_argument("--only", choices=sorted(DEFAULT_FILES), action="append",
                   help="only this default file (repeatable)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each side per file (best is reported)")
    p.add_argument("--target", type=int, default=500_000, help="events/s target reported for sightline")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the sightline run")
    p.add_argument("--no-reference", action="store_true", help="skip the DuckDB reference")
    args = p.parse_args(argv)
    files = args.files or [Path(DEFAULT_FILES[k]) for k in (args.only or ["1m", "10m"])]
    missing = [f for f in files if not f.exists()]
    if missing:
        print(f"missing: {', '.join(map(str, missing))} (generate with benchmarks/queries.py "
              f"--sizes 1000000,10000000 --data-dir /tmp/slbench)", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="sightline-import-bench-"))
    ok = True
    try:
        for path in files:
            sl, ref = [], []
            for _ in range(args.repeat):
                seconds, n, cpu = run_sightline(path, work, profile=args.profile)
                sl.append(n / seconds)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"  sightline  {path.name}: {n:,} events in {seconds:.2f}s = {n / seconds:,.0f} ev/s "
                      f"(CPU {cpu:.1f}s; peak RSS of the process so far {peak:,.0f} MB)", flush=True)
                if not args.no_reference:
                    seconds, m, cpu = run_reference(path, work)
                    ref.append(m / seconds)
                    print(f"  reference  {path.name}: {m:,} rows in {seconds:.2f}s = {m / seconds:,.0f} rows/s "
                          f"(CPU {cpu:.1f}s)", flush=True)
            best = max(sl)
            line = f"{path}: sightline {best:,.0f} ev/s"
            if ref:
                line += f", reference {max(ref):,.0f} rows/s, ratio {best / max(ref):.2f}"
            line += f"; target {args.target:,}: {'met' if best >= args.target else 'NOT met'}"
            print(line, flush=True)
            ok = ok and best >= args.target
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
