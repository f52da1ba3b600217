#!/usr/bin/env python
"""Bulk import throughput: ``sightline import FILE.parquet`` against DuckDB's own copy of the file.

For each Parquet file (default: the 1M- and 10M-event files ``benchmarks/queries.py --data-dir
/tmp/slbench`` generates), each run in a fresh process, interleaved:

1. **sightline**: :func:`sightline.ingest.bulk.import_files` into a fresh data directory (the
   code path of ``sightline import``: validation, dedup, persons, partitioned Parquet parts,
   the final merge of each partition's files), timed from open to close;
2. **old** (with ``--old COMMIT``): the same with the code of that git commit (``git archive``
   into a temporary directory), for before/after figures on a shared machine;
3. **reference**: DuckDB alone reads the same file and writes it back as zstd Parquet sorted by
   ``(event, timestamp)`` (``COPY (SELECT ... ORDER BY event, timestamp) TO ... (FORMAT
   parquet, COMPRESSION zstd)``), i.e. the floor of what storing the file costs on this machine.

Prints events/s (best and median of ``--repeat`` runs), CPU seconds (user + system, all
threads) and the ratio sightline / reference, which is the figure to compare across runs on a
shared machine; the absolute events/s move with the load. Run from the repository root::

    .venv/bin/python benchmarks/import_.py                       # 1M and 10M files
    .venv/bin/python benchmarks/import_.py --files /path/a.parquet --repeat 3 --old HEAD~3
    .venv/bin/python benchmarks/import_.py --only 1m --profile   # cProfile top functions too
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_FILES = {
    "1m": "/tmp/slbench/sl-e1000000-p100000-d30-s42-g1/events.parquet",
    "10m": "/tmp/slbench/sl-e10000000-p1000000-d30-s42-g1/events.parquet",
}


def _cpu() -> float:
    """CPU seconds of this process so far (all threads, user + system)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_sightline(path: Path, work: Path, profile: bool = False) -> dict:
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
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    shutil.rmtree(data, ignore_errors=True)
    return {"seconds": seconds, "rows": summary.loaded, "cpu": cpu, "rejected": dict(summary.rejected),
            "code": str(Path(sightline.__file__).resolve().parent.parent)}


def run_reference(path: Path, work: Path) -> dict:
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
    return {"seconds": seconds, "rows": int(n), "cpu": cpu}


def _child(args: argparse.Namespace) -> int:
    """One run in this (fresh) process; prints its figures as JSON on the last line."""
    if args.child_code:
        sys.path.insert(0, args.child_code)
    else:
        sys.path.insert(0, str(ROOT))
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sightline-import-bench-", dir=args.work))
    try:
        if args.child == "reference":
            result = run_reference(args.files[0], work)
        else:
            result = run_sightline(args.files[0], work, profile=args.profile)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return 0


def _spawn(kind: str, path: Path, code: str | None, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--files", str(path)]
    if code:
        cmd += ["--child-code", code]
    if args.work:
        cmd += ["--work", str(args.work)]
    if args.profile and kind == "sightline":
        cmd.append("--profile")
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=str(ROOT)).stdout
    return json.loads(out.strip().splitlines()[-1])


def _old_tree(commit: str) -> Path:
    """The repository at ``commit`` in a temporary directory (``git archive``)."""
    dest = Path(tempfile.mkdtemp(prefix="sightline-old-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, stdout=subprocess.PIPE).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _line(label: str, path: Path, runs: list[dict]) -> str:
    rates = [r["rows"] / r["seconds"] for r in runs]
    cpus = [r["cpu"] for r in runs]
    return (f"  {label:10s} {path.name}: {runs[0]['rows']:,} rows; best {max(rates):,.0f}/s, median "
            f"{statistics.median(rates):,.0f}/s; wall best {min(r['seconds'] for r in runs):.2f}s; CPU best "
            f"{min(cpus):.1f}s, median {statistics.median(cpus):.1f}s; peak RSS "
            f"{max(r['peak_rss_mb'] for r in runs):,.0f} MB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--files", nargs="*", type=Path, help="Parquet files to import (default: the 1M and 10M files)")
    p.add_argument("--only", choices=sorted(DEFAULT_FILES), action="append",
                   help="only this default file (repeatable)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each side per file (best and median reported)")
    p.add_argument("--old", metavar="COMMIT", help="also run the import of this git commit (before/after)")
    p.add_argument("--target", type=int, default=500_000, help="events/s target reported for sightline")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the sightline runs (stderr)")
    p.add_argument("--no-reference", action="store_true", help="skip the DuckDB reference")
    p.add_argument("--work", type=Path, help="directory for the temporary data directories")
    p.add_argument("--child", choices=["sightline", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--child-code", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    files = args.files or [Path(DEFAULT_FILES[k]) for k in (args.only or ["1m", "10m"])]
    missing = [f for f in files if not f.exists()]
    if missing:
        print(f"missing: {', '.join(map(str, missing))} (generate with benchmarks/queries.py "
              f"--sizes 1000000,10000000 --data-dir /tmp/slbench)", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}", flush=True)
    old = _old_tree(args.old) if args.old else None
    ok = True
    try:
        for path in files:
            sides: dict[str, list[dict]] = {"sightline": []}
            if old:
                sides["old"] = []
            if not args.no_reference:
                sides["reference"] = []
            for i in range(args.repeat):
                for side in sides:  # interleaved: the machine's load hits every side alike
                    kind = "reference" if side == "reference" else "sightline"
                    r = _spawn(kind, path, str(old) if side == "old" else None, args)
                    sides[side].append(r)
                    extra = f" rejected {r['rejected']}" if r.get("rejected") else ""
                    print(f"    run {i + 1} {side:10s} {r['rows']:,} rows in {r['seconds']:.2f}s = "
                          f"{r['rows'] / r['seconds']:,.0f}/s (CPU {r['cpu']:.1f}s){extra}", flush=True)
            for side, runs in sides.items():
                print(_line(side, path, runs), flush=True)
            best = max(r["rows"] / r["seconds"] for r in sides["sightline"])
            line = f"{path}: sightline {best:,.0f} ev/s"
            if "old" in sides:
                old_best = max(r["rows"] / r["seconds"] for r in sides["old"])
                cpu_new = statistics.median(r["cpu"] for r in sides["sightline"])
                cpu_old = statistics.median(r["cpu"] for r in sides["old"])
                line += f" (old {old_best:,.0f} ev/s: x{best / old_best:.2f}; CPU median {cpu_new:.1f}s vs {cpu_old:.1f}s)"
            if "reference" in sides:
                ref = max(r["rows"] / r["seconds"] for r in sides["reference"])
                line += f", reference {ref:,.0f} rows/s, ratio {best / ref:.2f}"
                if "old" in sides:
                    line += f" (old {old_best / ref:.2f})"
            line += f"; target {args.target:,}: {'met' if best >= args.target else 'NOT met'}"
            print(line, flush=True)
            ok = ok and best >= args.target
    finally:
        if old:
            shutil.rmtree(old, ignore_errors=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
