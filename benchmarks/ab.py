#!/usr/bin/env python
"""A/B timing of the SQL two versions of the query builders emit, in one process, alternating.

On a shared machine absolute timings drift by 2-10x from one minute to the next; the ratio of
two statements timed back to back, alternating, several rounds, stays trustworthy. This script

1. builds the SQL of each benchmark query (``benchmarks/queries.py``) twice: once with the
   ``sightline`` package of an *old* tree (``--old DIR``, e.g. ``git archive <commit> sightline``
   unpacked there, or a commit id: it is extracted into a temporary directory) and once with the
   current tree; each in a fresh process, through ``core.query`` (the SQL is captured and the
   result's digest kept, so both versions must give the same answer);
2. runs old and new statements alternately (``--rounds`` times, one warm-up each) on one
   DuckDB connection (read-only) to the data directory, and prints min and median per side and
   the ratio of the minimums.

Run from the repository root::

    .venv/bin/python benchmarks/ab.py --data /tmp/slbench/sl-e1000000-p100000-d30-s42-g1/data \
        --old HEAD~1 funnel_3 funnel_5

Exit code 1 when a result differs between the two versions.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _capture(tree: str, data: str, names: list[str], days: int, out: str) -> None:
    """(In a fresh process) the SQL, parameters and result digest of each query, with ``tree``'s sightline."""
    sys.path.insert(0, tree)
    import sightline  # from ``tree`` (before benchmarks/queries.py puts this tree on the path)
    from sightline.query import context as qctx

    sys.path.insert(1, str(ROOT / "benchmarks"))
    import queries as bench  # benchmarks/queries.py

    assert Path(sightline.__file__).resolve().is_relative_to(Path(tree).resolve()), sightline.__file__
    captured: list = []
    original = qctx.QueryContext.execute

    def execute(self, sql, params):
        captured.append((sql, {k: v for k, v in params.items() if f"${k}" in sql}))
        return original(self, sql, params)

    qctx.QueryContext.execute = execute
    result = {}
    with sightline.open(data) as core:
        for name, _label, q in bench.queries(days):
            if names and name not in names:
                continue
            captured.clear()
            raw = core.query(q).raw
            result[name] = {"sql": list(captured), "digest": bench._digest(raw),
                            "summary": bench.summarize(name, raw)}
    Path(out).write_bytes(pickle.dumps(result))


def capture(tree: Path, data: Path, names: list[str], days: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
        out = f.name
    try:
        code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import ab; "
                f"ab._capture({str(tree)!r}, {str(data)!r}, {names!r}, {days}, {out!r})")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=str(tree))
        return pickle.loads(Path(out).read_bytes())
    finally:
        Path(out).unlink(missing_ok=True)


def old_tree(spec: str, tmp: Path) -> Path:
    if Path(spec).is_dir():
        return Path(spec)
    dest = tmp / "old"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", spec, "sightline"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="queries of benchmarks/queries.py (default: all)")
    p.add_argument("--data", type=Path, required=True, help="a loaded data directory (benchmarks/queries.py --data-dir)")
    p.add_argument("--old", required=True, help="a directory holding the old sightline/ package, or a git commit")
    p.add_argument("--new", type=Path, default=ROOT, help="the tree with the new sightline/ (default: this one)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--threads", type=int, help="DuckDB threads (default: DuckDB's own, the CPU count)")
    p.add_argument("--old-json-view", action="store_true",
                   help="run the old side against the events view as it was before properties became text "
                        "(JSON: every part row's properties parsed when read), the new side against the current one")
    args = p.parse_args(argv)

    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        old = capture(old_tree(args.old, Path(tmp)), args.data, args.names, args.days)
    new = capture(args.new, args.data, args.names, args.days)
    con = duckdb.connect(str(args.data / "events.duckdb"), read_only=True)
    try:  # the settings the store applies to its connection (both sides run under them)
        from sightline.storage.duckdb_backend import QUERY_SETTINGS
        con.execute(QUERY_SETTINGS)
    except ImportError:
        pass
    if args.threads:
        con.execute(f"SET threads = {int(args.threads)}")
    differs = False

    view = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'events' AND schema_name = 'main'").fetchone()[0]
    old_view = (view.replace("CAST(properties AS VARCHAR) AS properties", "properties")
                .replace("CREATE VIEW events", "CREATE TEMP VIEW events", 1))

    def run(stmts, old_side: bool = False) -> float:
        if args.old_json_view and old_side:
            con.execute(old_view)  # shadows main.events until dropped
        try:
            return _run(stmts)
        finally:
            if args.old_json_view and old_side:
                con.execute("DROP VIEW temp.events")

    def _run(stmts) -> float:
        t = time.perf_counter()
        for sql, params in stmts:
            con.execute(sql, params or None).fetchall()
        return time.perf_counter() - t

    print(f"{'query':<20}{'old min':>10}{'old med':>10}{'new min':>10}{'new med':>10}{'new/old':>9}  result")
    for name in new:
        a, b = old[name], new[name]
        run(a["sql"], True)
        run(b["sql"])
        ta, tb = [], []
        for _ in range(args.rounds):
            ta.append(run(a["sql"], True))
            tb.append(run(b["sql"]))
        same = a["digest"] == b["digest"]
        differs |= not same
        print(f"{name:<20}{min(ta) * 1000:>10.0f}{statistics.median(ta) * 1000:>10.0f}"
              f"{min(tb) * 1000:>10.0f}{statistics.median(tb) * 1000:>10.0f}{min(tb) / min(ta):>9.2f}  "
              f"{'same' if same else 'DIFFERS: ' + a['summary'] + ' | ' + b['summary']}", flush=True)
    con.close()
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
