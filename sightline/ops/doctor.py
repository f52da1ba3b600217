"""``sightline doctor``: check a data directory and its server, and say what to fix.

Each check gives ``ok``, ``warn`` or ``fail`` with a one-line finding and, unless ok, what to
do. Nothing is changed. While a server runs, the event store is not opened (the server holds
it): the server's own numbers come over the control channel (``GET /api/ops/status``).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

OK, WARN, FAIL = "ok", "warn", "fail"
GB = 1024 ** 3
MB = 1024 ** 2
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*", re.I)
_UNITS = {None: 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
          "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


@dataclass
class Thresholds:
    disk_free_bytes: int = GB           # warn below this much free space...
    disk_free_ratio: float = 0.10       # ...or this share of the disk
    disk_fail_bytes: int = 100 * MB     # fail below this
    lag_warn_s: float = 10.0
    lag_fail_s: float = 300.0
    log_warn_bytes: int = GB            # ingestion log segments on disk
    duckdb_wal_warn_bytes: int = 2 * GB


def parse_size(text: str) -> int | None:
    m = _SIZE_RE.fullmatch(text or "")
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower() or None])


def _total_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def check_data_dir(data_dir: Path) -> Check:
    if not data_dir.exists():
        return Check("data directory", FAIL, f"{data_dir} does not exist.",
                     f"Point --data-dir (or SIGHTLINE_DATA_DIR) at your data, or start "
                     f"`sightline serve --data-dir {data_dir}` to create a new one.")
    if not data_dir.is_dir():
        return Check("data directory", FAIL, f"{data_dir} is not a directory.", "Choose a directory path.")
    try:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("data directory", FAIL, f"{data_dir} is not writable: {exc.strerror}.",
                     f"Give the user running Sightline write access (e.g. chown -R $USER {data_dir}).")
    stores = [n for n in ("events.duckdb", "meta.sqlite") if (data_dir / n).exists()]
    if not stores:
        return Check("data directory", WARN, f"{data_dir} is writable but holds no Sightline data yet.",
                     "Nothing to fix if this is a new installation: `sightline serve` creates the stores.")
    return Check("data directory", OK, f"{data_dir.resolve()} is writable ({', '.join(stores)}).")


def check_disk(data_dir: Path, t: Thresholds) -> Check:
    path = data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    ratio = usage.free / usage.total if usage.total else 0.0
    detail = f"{_human(usage.free)} free of {_human(usage.total)} ({ratio:.0%})."
    fix = ("Free space or move the data directory to a bigger disk; `sightline prune` drops old events, "
           "and backups in <data>/backups can be moved elsewhere.")
    if usage.free < t.disk_fail_bytes:
        return Check("disk space", FAIL, detail + " Writes will fail soon.", fix)
    if usage.free < t.disk_free_bytes or ratio < t.disk_free_ratio:
        return Check("disk space", WARN, detail, fix)
    return Check("disk space", OK, detail)


def check_schema(data_dir: Path, server_running: bool) -> Check:
    from sightline.ops.migrations import CURRENT_VERSION, meta_version, read_versions

    try:
        if server_running or not (data_dir / "events.duckdb").exists():
            meta, events = meta_version(data_dir / "meta.sqlite"), None
        else:
            v = read_versions(data_dir, read_only=True)
            meta, events = v.meta, v.events
    except Exception as exc:  # a damaged store, or a lock taken meanwhile
        return Check("schema", WARN, f"Could not read the schema version: {exc}",
                     "Run `sightline doctor` again; if it persists, restore the latest backup.")
    versions = [v for v in (meta, events) if v is not None]
    if not versions:
        return Check("schema", OK, f"No stores yet; they will be created at schema version {CURRENT_VERSION}.")
    newest, oldest = max(versions), min(versions)
    if newest > CURRENT_VERSION:
        return Check("schema", FAIL, f"The data has schema version {newest}; this Sightline supports up to "
                     f"{CURRENT_VERSION} (a newer Sightline wrote it).",
                     "Upgrade Sightline to the version that wrote this data directory.")
    if oldest < CURRENT_VERSION:
        return Check("schema", WARN, f"The data has schema version {oldest}; this Sightline uses {CURRENT_VERSION}.",
                     "The next `sightline serve` upgrades it, after taking a backup in <data>/backups.")
    return Check("schema", OK, f"Schema version {CURRENT_VERSION}, as this Sightline expects.")


def check_server(handle: Any, t: Thresholds) -> tuple[list[Check], dict | None]:
    if handle is None:
        return [Check("server", OK, "No server is running on this data directory.")], None
    try:
        status = handle.request("GET", "/api/ops/status", timeout=10)
    except Exception as exc:
        return [Check("server", FAIL, f"The server (pid {handle.pid}, {handle.url}) does not answer: {exc}",
                      "Look at the server's log; restart it if it hangs (acknowledged events are safe).")], None
    out = [Check("server", OK, f"Running (pid {handle.pid}) at {handle.url}, Sightline {status['sightline_version']}, "
                 f"up {status['uptime_seconds']:.0f} s.")]
    lag = float(status.get("ingestion_lag_seconds") or 0)
    detail = (f"{lag:.1f} s; {status.get('unflushed_events', 0):,} events acknowledged but not yet stored, "
              f"{status.get('pending_events', 0):,} queued.")
    fix = ("The store is not keeping up or failing: look for 'storing ... failed' in the server's log, check "
           "disk space, and lower the ingest rate or raise SIGHTLINE_FLUSH_INTERVAL.")
    if lag >= t.lag_fail_s:
        out.append(Check("ingestion lag", FAIL, detail, fix))
    elif lag >= t.lag_warn_s:
        out.append(Check("ingestion lag", WARN, detail, fix))
    else:
        out.append(Check("ingestion lag", OK, detail))
    failures = int(status.get("writer_failures") or 0)
    if failures:
        out.append(Check("storage errors", WARN, f"The writer has met {failures} storage error(s) since start.",
                         "Look for 'failed' in the server's log (disk full? permissions?)."))
    return out, status


def check_backlog(data_dir: Path, t: Thresholds, status: dict | None) -> list[Check]:
    from sightline.ops.http import duckdb_wal_bytes, log_bytes

    out = []
    n = status["ingestion_log_bytes"] if status else log_bytes(data_dir)
    segments = len(list((data_dir / "wal").glob("*.log"))) if (data_dir / "wal").is_dir() else 0
    detail = f"{_human(n)} in {segments} segment(s) of the ingestion log."
    if n >= t.log_warn_bytes:
        out.append(Check("ingestion log", WARN, detail + " Stored segments are normally deleted at once.",
                         "Events are waiting to be stored: see the ingestion lag and the server's log; a "
                         "stopped server replays the log at its next start."))
    else:
        out.append(Check("ingestion log", OK, detail))
    w = status["duckdb_wal_bytes"] if status else duckdb_wal_bytes(data_dir)
    if w >= t.duckdb_wal_warn_bytes:
        out.append(Check("DuckDB log", WARN, f"events.duckdb.wal is {_human(w)}: checkpoints are not keeping up.",
                         "Restart the server during a quiet period (it checkpoints on shutdown) or lower "
                         "SIGHTLINE_DUCKDB_CHECKPOINT_THRESHOLD."))
    else:
        out.append(Check("DuckDB log", OK, f"events.duckdb.wal is {_human(w)}."))
    return out


def check_keys(data_dir: Path, env: Mapping[str, str]) -> Check:
    path = data_dir / "meta.sqlite"
    if not path.exists():
        return Check("API keys", WARN, "No metadata store yet, so no secret API key.",
                     "Start `sightline serve` (it prints a new key) or run `sightline keys create`.")
    try:
        from sightline.ops.migrations import sqlite_readonly

        con = sqlite_readonly(path)
        try:
            n = con.execute("SELECT count(*) FROM api_keys").fetchone()[0]
            projects = con.execute("SELECT count(*) FROM projects").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as exc:
        return Check("API keys", FAIL, f"meta.sqlite cannot be read: {exc}.",
                     "Restore the latest backup (`sightline restore`).")
    if projects == 0:
        return Check("API keys", WARN, "No project yet.", "Start `sightline serve` once to create the default project.")
    if n == 0:
        return Check("API keys", WARN, "No secret API key: nothing can read data over HTTP.",
                     "Run `sightline keys create` (or set SIGHTLINE_API_KEY before `sightline serve`).")
    pinned = " (one pinned by SIGHTLINE_API_KEY)" if env.get("SIGHTLINE_API_KEY") else ""
    return Check("API keys", OK, f"{n} secret API key(s){pinned}, {projects} project(s).")


def check_memory(env: Mapping[str, str]) -> Check:
    total = _total_memory()
    value = env.get("SIGHTLINE_DUCKDB_MEMORY_LIMIT")
    ram = f" of {_human(total)} RAM" if total else ""
    if not value:
        return Check("DuckDB memory", OK, f"SIGHTLINE_DUCKDB_MEMORY_LIMIT is not set: DuckDB may use 80%{ram}.")
    size = parse_size(value)
    if size is None or size <= 0:
        return Check("DuckDB memory", FAIL, f"SIGHTLINE_DUCKDB_MEMORY_LIMIT={value!r} is not a size.",
                     "Use a size such as 4GB or 512MB (the server will not start otherwise).")
    if total and size > total:
        return Check("DuckDB memory", WARN, f"SIGHTLINE_DUCKDB_MEMORY_LIMIT={value} is more than the machine's "
                     f"{_human(total)}.", "Set it below the RAM (about 50-80%) so DuckDB spills to disk instead.")
    if size < 256 * MB:
        return Check("DuckDB memory", WARN, f"SIGHTLINE_DUCKDB_MEMORY_LIMIT={value} is very low.",
                     "Give DuckDB at least 1GB; ingestion shares this limit with queries.")
    return Check("DuckDB memory", OK, f"SIGHTLINE_DUCKDB_MEMORY_LIMIT={value}{ram}.")


def check_config(env: Mapping[str, str]) -> Check:
    problems = []
    interval = env.get("SIGHTLINE_FLUSH_INTERVAL")
    if interval:
        try:
            if float(interval) <= 0:
                raise ValueError
        except ValueError:
            problems.append(f"SIGHTLINE_FLUSH_INTERVAL={interval!r} must be a positive number of seconds")
    threshold = env.get("SIGHTLINE_DUCKDB_CHECKPOINT_THRESHOLD")
    if threshold and parse_size(threshold) is None:
        problems.append(f"SIGHTLINE_DUCKDB_CHECKPOINT_THRESHOLD={threshold!r} is not a size (e.g. 1GB)")
    port = env.get("SIGHTLINE_PORT")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        problems.append(f"SIGHTLINE_PORT={port!r} is not a TCP port")
    token = env.get("SIGHTLINE_PROJECT_TOKEN")
    if token is not None and not token.strip():
        problems.append("SIGHTLINE_PROJECT_TOKEN is set but empty")
    if problems:
        return Check("configuration", FAIL, "; ".join(problems) + ".", "Fix or unset these environment variables.")
    return Check("configuration", OK, "Environment settings are valid.")


def check_leftovers(data_dir: Path, server_running: bool) -> Check | None:
    backups = data_dir / "backups"
    if server_running or not backups.is_dir():
        return None
    stale = sorted(p for p in backups.iterdir() if p.name.startswith(".staging-"))
    if not stale:
        return None
    return Check("backups", WARN, f"{len(stale)} unfinished backup staging director(ies) in {backups}.",
                 f"Remove them: rm -r {backups}/.staging-*")


def run(data_dir: Path, *, env: Mapping[str, str] | None = None, thresholds: Thresholds | None = None,
        handle: Any = "find") -> list[Check]:
    """Every check, in order. ``handle``: the running server (found from ``data_dir`` by default)."""
    from sightline.ops import control

    env = os.environ if env is None else env
    t = thresholds or Thresholds()
    data_dir = Path(data_dir)
    checks = [check_data_dir(data_dir)]
    if data_dir.is_dir():
        if handle == "find":
            handle = control.running_server(data_dir, wait_s=2)
        checks.append(check_disk(data_dir, t))
        checks.append(check_schema(data_dir, handle is not None))
        server_checks, status = check_server(handle, t)
        checks += server_checks
        checks += check_backlog(data_dir, t, status)
        checks.append(check_keys(data_dir, env))
        leftover = check_leftovers(data_dir, handle is not None)
        if leftover:
            checks.append(leftover)
    else:
        checks.append(check_disk(data_dir, t))
    checks.append(check_memory(env))
    checks.append(check_config(env))
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"[{c.status.upper():>4}] {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"       {'':<{width}}  → {c.fix}")
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    lines.append("")
    lines.append("All checks passed." if not fails and not warns else f"{fails} failure(s), {warns} warning(s).")
    return "\n".join(lines)


def to_json(checks: list[Check]) -> dict:
    return {"ok": not any(c.status == FAIL for c in checks), "checks": [asdict(c) for c in checks]}
