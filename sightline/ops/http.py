"""Operations endpoints (secret key or the control token): backups and the server's status.

* ``POST /api/ops/backup`` streams a consistent backup (a tar archive, see
  :mod:`sightline.ops.backup`) of the data directory while the server keeps running.
* ``GET /api/ops/status`` reports what ``sightline doctor`` checks on a running server.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sightline.errors import SightlineError
from sightline.web.http import error_response, json_response, require_api_key

UTC = timezone.utc
STARTED = time.time()


def log_bytes(data_dir: Path) -> int:
    """Size of the ingestion log segments (events acknowledged, maybe not stored yet)."""
    total = 0
    for p in (Path(data_dir) / "wal").glob("*.log"):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


def duckdb_wal_bytes(data_dir: Path) -> int:
    try:
        return (Path(data_dir) / "events.duckdb.wal").stat().st_size
    except OSError:
        return 0


async def backup(request: Request) -> Response:
    from sightline.ops import backup as backups

    try:
        require_api_key(request)
        core = request.app.state.core
        snap = await run_in_threadpool(backups.snapshot_live, core)
    except SightlineError as exc:
        return error_response(exc)
    try:
        await run_in_threadpool(backups.build_manifest, snap, core.data_dir.resolve())
    except BaseException:
        snap.cleanup()
        raise

    def stream():
        try:
            yield from backups.iter_archive(snap)
        finally:
            snap.cleanup()

    name = "sightline-backup-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ".tar"
    return StreamingResponse(stream(), media_type="application/x-tar",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def status_of(core) -> dict:
    from sightline.ops.backup import sightline_version
    from sightline.ops.migrations import CURRENT_VERSION, meta_version

    w = core.writer
    return {
        "sightline_version": sightline_version(),
        "schema_version": meta_version(core.meta.path),
        "code_schema_version": CURRENT_VERSION,
        "data_dir": str(core.data_dir.resolve()),
        "uptime_seconds": round(time.time() - STARTED, 3),
        "pending_events": w.pending_events,
        "unflushed_events": w.unflushed_events,
        "ingestion_lag_seconds": round(w.lag_seconds, 3),
        "ingestion_log_bytes": log_bytes(core.data_dir),
        "duckdb_wal_bytes": duckdb_wal_bytes(core.data_dir),
        "writer_failures": w.stats.failures,
        "store": getattr(core.storage, "dialect", "unknown"),
    }


async def status(request: Request) -> Response:
    try:
        require_api_key(request)
    except SightlineError as exc:
        return error_response(exc)
    return json_response(await run_in_threadpool(status_of, request.app.state.core))


def routes() -> list[Route]:
    return [Route("/api/ops/backup", backup, methods=["POST"]),
            Route("/api/ops/status", status, methods=["GET"])]
