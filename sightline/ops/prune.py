"""Retention: drop a project's events older than its ``retention_days`` (or a given moment).

One core for every door: ``sightline prune`` (directly on a stopped data directory, or through
the running server), ``POST /api/projects/<id>/prune/`` and the server's daily job
(:func:`run_retention`). The store does the work (``Storage.prune_events``: whole time
partitions are deleted, the boundary partition rewritten, hot rows deleted, space returned);
real runs happen inside ``Writer.run_exclusive`` so nothing is written meanwhile, and the
ingestion log's old segments (which may hold pruned events) are purged afterwards.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sightline.errors import InvalidInput

log = logging.getLogger("sightline.retention")

MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650
DEFAULT_INTERVAL_S = 86_400.0
_RELATIVE = re.compile(r"^-?(\d{1,5})([hdwmy])$")


def validate_retention_days(value: Any) -> int | None:
    """The project setting: a whole number of days from 1 to 3650, or None (keep forever)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_RETENTION_DAYS <= value <= MAX_RETENTION_DAYS:
        raise InvalidInput(f"retention_days is a whole number of days from {MIN_RETENTION_DAYS} to "
                           f"{MAX_RETENTION_DAYS}, or null to keep events forever.", attr="retention_days")
    return value


def parse_moment(value: str | datetime | None, *, name: str = "before", now: datetime | None = None) -> datetime | None:
    """``2026-01-01``, an ISO timestamp (naive means UTC) or a relative ``-7d`` / ``-24h`` /
    ``-2w`` / ``-3m`` / ``-1y`` (that long before now) → an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if unit in "hdw":
            hours = {"h": 1, "d": 24, "w": 24 * 7}[unit] * n
            return now - timedelta(hours=hours)
        from sightline.query.dates import add_months

        return add_months(now, -n * (12 if unit == "y" else 1))
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise InvalidInput(f"--{name} must be a date (2026-01-31), an ISO timestamp or relative "
                           f"(-7d, -24h, -2w, -3m, -1y); got {text!r}.", code="invalid_timestamp",
                           attr=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    """Keep ``days`` whole days: events before the start (UTC) of the day ``days`` ago go."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


def _store(core):
    storage = core.storage
    if not hasattr(storage, "prune_events"):
        raise InvalidInput("This event store does not support pruning (ClickHouse expires data with a TTL).",
                           code="not_supported")
    return storage


def prune(core, *, project_id: int | str | None = None, before: str | datetime | None = None,
          dry_run: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Delete (or with ``dry_run`` count) the project's events older than ``before``, or than
    its ``retention_days`` setting when ``before`` is not given. Returns the report as JSON."""
    project = core.resolve_project(project_id)
    cutoff = parse_moment(before, now=now)
    if cutoff is None:
        days = project.settings.get("retention_days")
        if days is None:
            raise InvalidInput(f"Project {project.id} keeps events forever (no retention_days setting): "
                               "set one, or give --before.", code="no_retention", attr="before")
        cutoff = retention_cutoff(int(days), now)
    storage = _store(core)
    if dry_run:
        core.sync()
        report = storage.prune_events(project.id, cutoff, dry_run=True)
    else:
        report = core.writer.run_exclusive(lambda _identity: storage.prune_events(project.id, cutoff),
                                           purge_log=True)
        log.info("pruned %d events of project %d older than %s (%d bytes freed)", report.events, project.id,
                 cutoff.isoformat(), max(0, report.disk_bytes_before - report.disk_bytes_after))
    out = report.to_json()
    out["retention_days"] = project.settings.get("retention_days")
    return out


def compact(core) -> dict[str, Any]:
    """Move settled hot rows into time partitions (and tidy the partitions), exclusively."""
    storage = _store(core)
    return core.writer.run_exclusive(lambda _identity: storage.compact_parts()).to_json()


def run_retention(core, now: datetime | None = None) -> dict[str, Any]:
    """The daily job: compact, then prune every project that has ``retention_days``."""
    out: dict[str, Any] = {"compaction": None, "projects": []}
    if not hasattr(core.storage, "prune_events"):
        return out
    out["compaction"] = compact(core)
    for project in core.meta.projects():
        if project.settings.get("retention_days") is None:
            continue
        try:
            out["projects"].append(prune(core, project_id=project.id, now=now))
        except Exception:  # one project's failure must not stop the others
            log.exception("retention of project %d failed", project.id)
    return out


def retention_interval() -> float | None:
    """Seconds between runs of the server's retention job (SIGHTLINE_RETENTION_INTERVAL,
    default a day); ``0`` or ``off`` turns the job off (None)."""
    import os

    raw = os.environ.get("SIGHTLINE_RETENTION_INTERVAL", "").strip().lower()
    if raw in ("0", "off", "false", "no"):
        return None
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        log.warning("SIGHTLINE_RETENTION_INTERVAL=%r is not a number of seconds; using a day", raw)
        value = DEFAULT_INTERVAL_S
    return max(value, 0.1)


async def retention_loop(core, state: Any) -> None:
    """Run :func:`run_retention` shortly after start and then every interval; the last result
    is kept on ``state.retention`` (runs, last_run_at, last_result, last_error)."""
    import asyncio

    from starlette.concurrency import run_in_threadpool

    interval = retention_interval()
    status = {"runs": 0, "last_run_at": None, "last_result": None, "last_error": None,
              "interval_seconds": interval}
    state.retention = status
    if interval is None:
        return
    await asyncio.sleep(min(interval, 60.0))
    while True:
        try:
            status["last_result"] = await run_in_threadpool(run_retention, core)
            status["last_error"] = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. shutting down; try again next time
            log.exception("the retention job failed")
            status["last_error"] = str(exc)
        status["runs"] += 1
        status["last_run_at"] = datetime.now(UTC).isoformat()
        await asyncio.sleep(interval)
