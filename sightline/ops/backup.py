"""Backups and restores of a data directory: one tar file with a manifest.

A backup holds the event store (``events.duckdb``, checkpointed, and its Parquet ``parts/``), the
whole metadata store (``meta.sqlite``: projects, keys, settings, flags, cohorts, experiments and
any table added later), and ``manifest.json`` first: format, Sightline and schema versions, the
size and SHA-256 of every file and the row count of every table.

Two ways to take one, both consistent:

* **live** (a server runs on the data directory; ``sightline backup`` asks it over the control
  channel, ``POST /api/ops/backup``): inside ``Writer.run_exclusive`` every acknowledged event is
  stored, DuckDB is checkpointed and its file copied, SQLite is copied with its online backup
  API and the parts are linked; ingestion resumes as soon as the copies are made (requests sent
  meanwhile wait, then are acknowledged), and the archive is written afterwards. The copy
  forgets the ingestion-log position: a restored directory starts a new log.
* **offline** (nobody holds the directory): the same files, with DuckDB opened exclusively, plus
  the ingestion log ``wal/`` as it is (events acknowledged but not yet stored are replayed by the
  next start). Schema upgrades take one of these first.

:func:`restore` checks the manifest (format, schema version not newer than this Sightline,
every file's size and checksum, the row counts of the copied stores) in a staging directory,
and only then moves the files into the data directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from sightline.errors import InvalidInput, SightlineError

UTC = timezone.utc
FORMAT = "sightline-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DB_FILE = "events.duckdb"
META_FILE = "meta.sqlite"
PARTS_DIR = "parts"
LOG_DIR = "wal"
BACKUPS_DIR = "backups"
CHUNK = 1024 * 1024
# what a data directory holds that a restore replaces (``run/`` and ``backups/`` stay)
STORE_ENTRIES = (DB_FILE, DB_FILE + ".wal", META_FILE, META_FILE + "-wal", META_FILE + "-shm",
                 PARTS_DIR, LOG_DIR)
IGNORED_ENTRIES = {"run", BACKUPS_DIR}


class BackupError(SightlineError):
    status = 400
    code = "invalid_backup"


def sightline_version() -> str:
    try:
        from importlib.metadata import version

        return version("sightline")
    except Exception:  # pragma: no cover - running from a checkout without metadata
        return "unknown"


@dataclass
class Snapshot:
    """Copied files in a staging directory, ready to be archived."""

    staging: Path
    mode: str                              # "live" or "offline"
    schema_version: int | None
    files: list[str] = field(default_factory=list)   # relative POSIX paths under staging
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


# -- taking a snapshot ------------------------------------------------------------------------
def _safe_rel(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
        raise BackupError(f"Unsafe path in a backup: {name!r}.")
    return p.as_posix()


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # parts are immutable: a hard link is a free, consistent copy
    except OSError:
        shutil.copyfile(src, dst)


def _with_actors_files(parts_dir: Path, names: list[str]) -> list[str]:
    """The registered parts, each followed by its actors file when it has one (immutable too)."""
    from sightline.storage.duckdb_parts import ACTORS_SUFFIX

    out = []
    for name in names:
        out.append(name)
        if (parts_dir / (name + ACTORS_SUFFIX)).exists():
            out.append(name + ACTORS_SUFFIX)
    return out


def _copy_sqlite(src: Path, dst: Path) -> None:
    """SQLite's online backup API: a consistent copy while other connections write."""
    from sightline.ops.migrations import sqlite_readonly

    source = sqlite_readonly(src)
    target = sqlite3.connect(str(dst))
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        target.close()
        source.close()


def sqlite_counts(path: Path) -> dict[str, int]:
    from sightline.ops.migrations import sqlite_readonly

    con = sqlite_readonly(path)
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        con.close()


def _new_staging(parent: Path, label: str) -> Path:
    staging = parent / f".{label}-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    return staging


def snapshot_live(core: Any, staging_parent: Path | None = None) -> Snapshot:
    """Consistent copies of a running core's stores (ingestion pauses only while copying)."""
    from sightline.ops.migrations import CURRENT_VERSION
    from sightline.storage import duckdb_files

    if not hasattr(core.storage, "snapshot_to"):
        raise InvalidInput("Backups cover the embedded DuckDB store; back a ClickHouse store up with "
                           "ClickHouse's own BACKUP command.", code="not_supported")
    staging = _new_staging(staging_parent or core.data_dir / BACKUPS_DIR, "staging")
    snap = Snapshot(staging, "live", CURRENT_VERSION)
    try:
        def copy(_identity: Any) -> None:
            files, parts = core.storage.snapshot_to(staging)
            _copy_sqlite(core.meta.path, staging / META_FILE)
            for name in _with_actors_files(core.storage.parts_dir, parts):
                rel = _safe_rel(f"{PARTS_DIR}/{name}")
                _link_or_copy(core.storage.parts_dir / name, staging / rel)
                files.append(rel)
            snap.files = files + [META_FILE]

        core.writer.run_exclusive(copy)
        # outside the writer: the copy forgets the log position and is counted
        db_counts = duckdb_files.prepare_copy(staging / DB_FILE, forget_log_position=True)
        snap.files = [f for f in snap.files if (staging / f).exists()]
        snap.counts = {DB_FILE: db_counts, META_FILE: sqlite_counts(staging / META_FILE)}
    except BaseException:
        snap.cleanup()
        raise
    return snap


def snapshot_offline(data_dir: Path, staging_parent: Path | None = None, *, con: Any = None) -> Snapshot:
    """Copies of a data directory nobody else holds. ``con``: an exclusive DuckDB connection
    the caller already holds (schema upgrades); otherwise one is opened for the copy."""
    from sightline.ops import migrations
    from sightline.storage import duckdb_files

    data_dir = Path(data_dir)
    if not (data_dir / DB_FILE).exists() and not (data_dir / META_FILE).exists():
        raise InvalidInput(f"{data_dir} holds no Sightline data (no {DB_FILE} or {META_FILE}).",
                           code="no_data")
    staging = _new_staging(staging_parent or data_dir / BACKUPS_DIR, "staging")
    versions = migrations.read_versions(data_dir, con=con) if con is not None else None
    own = None
    snap = Snapshot(staging, "offline", None)
    try:
        files: list[str] = []
        if (data_dir / DB_FILE).exists():
            own = con is None
            db = con if con is not None else duckdb_files.connect_exclusive(data_dir / DB_FILE)
            try:
                if versions is None:
                    versions = migrations.read_versions(data_dir, con=db)
                files += duckdb_files.checkpoint_and_copy(db, data_dir / DB_FILE, staging)
                for name in _with_actors_files(data_dir / PARTS_DIR, duckdb_files.part_names(db)):
                    rel = _safe_rel(f"{PARTS_DIR}/{name}")
                    _link_or_copy(data_dir / PARTS_DIR / name, staging / rel)
                    files.append(rel)
                if (data_dir / META_FILE).exists():
                    _copy_sqlite(data_dir / META_FILE, staging / META_FILE)
                    files.append(META_FILE)
                log_dir = data_dir / LOG_DIR
                for seg in sorted(log_dir.glob("*.log")) if log_dir.is_dir() else []:
                    rel = f"{LOG_DIR}/{seg.name}"
                    (staging / LOG_DIR).mkdir(exist_ok=True)
                    shutil.copyfile(seg, staging / rel)
                    files.append(rel)
            finally:
                if own:
                    db.close()
            snap.counts[DB_FILE] = duckdb_files.prepare_copy(staging / DB_FILE, forget_log_position=False)
        else:
            versions = migrations.read_versions(data_dir)
            _copy_sqlite(data_dir / META_FILE, staging / META_FILE)
            files.append(META_FILE)
        if (staging / META_FILE).exists():
            snap.counts[META_FILE] = sqlite_counts(staging / META_FILE)
        snap.files = [f for f in files if (staging / f).exists()]
        snap.schema_version = versions.data_version if versions else None
    except BaseException:
        snap.cleanup()
        raise
    return snap


# -- the archive ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(snap: Snapshot, source: Path | None = None) -> dict[str, Any]:
    files = {}
    for rel in snap.files:
        p = snap.staging / rel
        files[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    snap.manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(), "sightline_version": sightline_version(),
        "schema_version": snap.schema_version, "mode": snap.mode,
        "source": str(source) if source else None,
        "files": files, "counts": snap.counts,
    }
    return snap.manifest


def _tar_header(name: str, size: int, mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = int(time.time())
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def iter_archive(snap: Snapshot) -> Iterator[bytes]:
    """The tar archive as a stream of chunks: ``manifest.json`` first, then every file."""
    manifest = json.dumps(snap.manifest, indent=2, sort_keys=True).encode()
    yield _tar_header(MANIFEST, len(manifest)) + manifest + _pad(len(manifest))
    for rel in snap.files:
        path = snap.staging / rel
        expected = snap.manifest["files"][rel]["size"]
        yield _tar_header(rel, expected)
        sent = 0
        with open(path, "rb") as fh:
            while sent < expected and (chunk := fh.read(min(CHUNK, expected - sent))):
                sent += len(chunk)
                yield chunk
        if sent != expected:  # pragma: no cover - staged files are private to us
            raise BackupError(f"{rel} changed while it was archived.")
        yield _pad(expected)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def write_archive(chunks: Iterator[bytes], out: Path) -> int:
    """Write an archive stream to ``out`` (via a temporary file, fsync'd); returns its size."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    size = 0
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


@dataclass
class BackupResult:
    path: Path
    bytes: int
    manifest: dict[str, Any]

    def summary(self) -> str:
        m = self.manifest
        db = m["counts"].get(DB_FILE, {})
        meta = m["counts"].get(META_FILE, {})
        return (f"Backed up to {self.path} ({self.bytes / 1e6:.1f} MB, {m['mode']}, schema v{m['schema_version']}): "
                f"{db.get('events', 0):,} events, {db.get('persons', 0):,} persons, "
                f"{meta.get('feature_flags', 0):,} flags, {meta.get('cohorts', 0):,} cohorts.")


def backup_offline(data_dir: Path, out: Path, *, con: Any = None) -> BackupResult:
    snap = snapshot_offline(data_dir, con=con)
    try:
        manifest = build_manifest(snap, Path(data_dir).resolve())
        size = write_archive(iter_archive(snap), out)
    finally:
        snap.cleanup()
    verify_archive(out)
    return BackupResult(Path(out), size, manifest)


def backup(data_dir: Path, out: Path) -> BackupResult:
    """``sightline backup``: through the running server if there is one, else offline."""
    from sightline.ops import control

    data_dir, out = Path(data_dir), Path(out)
    if out.exists() and out.is_dir():
        raise InvalidInput(f"{out} is a directory; give a file name such as backup.tar.", code="invalid_path")
    handle = control.running_server(data_dir)
    if handle is None:
        return backup_offline(data_dir, out)
    size = write_archive(_download(handle), out)
    manifest = verify_archive(out)
    return BackupResult(out, size, manifest)


def _download(handle: Any) -> Iterator[bytes]:
    import urllib.error
    import urllib.request

    from sightline.ops.control import ServerError

    req = urllib.request.Request(handle.url.rstrip("/") + "/api/ops/backup", data=b"", method="POST",
                                 headers={"Authorization": f"Bearer {handle.token}"})
    try:
        with urllib.request.urlopen(req, timeout=3600) as resp:
            while chunk := resp.read(CHUNK):
                yield chunk
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())
            detail, code = err.get("detail") or str(err), err.get("code") or "server_error"
        except ValueError:
            detail, code = str(exc), "server_error"
        raise ServerError(detail, status=exc.code, code=code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"Could not reach the running server at {handle.url}: {exc}") from None


# -- reading and checking an archive ----------------------------------------------------------
def _check_manifest(manifest: Any) -> dict[str, Any]:
    from sightline.ops.migrations import CURRENT_VERSION, SchemaTooNew

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("This file is not a Sightline backup (its manifest is missing or foreign).")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"Backup format version {manifest.get('format_version')} is not supported "
                          f"(this Sightline reads version {FORMAT_VERSION}).")
    version = manifest.get("schema_version")
    if isinstance(version, int) and version > CURRENT_VERSION:
        raise SchemaTooNew(
            f"This backup has schema version {version}, but this Sightline ({sightline_version()}) "
            f"supports schema version {CURRENT_VERSION} at most. Restore it with a Sightline at least as "
            f"new as the one that made it ({manifest.get('sightline_version')}).")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) and isinstance(v.get("size"), int)
                                              and isinstance(v.get("sha256"), str) for v in files.values()):
        raise BackupError("The backup's manifest has no valid file list.")
    for name in files:
        _safe_rel(name)
    return manifest


def _members(archive: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, dict[str, Any]]]:
    """Each file of the archive after the manifest, checked against it (sizes, paths)."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"Cannot read {archive} as a backup: {exc}") from None
    with tar:
        first = tar.next()
        if first is None or first.name != MANIFEST or not first.isfile():
            raise BackupError(f"{archive} is not a Sightline backup: it does not start with {MANIFEST}.")
        try:
            manifest = _check_manifest(json.loads(tar.extractfile(first).read()))
        except ValueError:
            raise BackupError(f"The manifest of {archive} is not JSON.") from None
        yield tar, first, manifest
        seen = set()
        while (info := tar.next()) is not None:
            name = _safe_rel(info.name)
            if not info.isfile() or name not in manifest["files"] or name in seen:
                raise BackupError(f"Unexpected entry {info.name!r} in {archive}.")
            if info.size != manifest["files"][name]["size"]:
                raise BackupError(f"{name} in {archive} has {info.size} bytes; the manifest says "
                                  f"{manifest['files'][name]['size']}.")
            seen.add(name)
            yield tar, info, manifest
        missing = set(manifest["files"]) - seen
        if missing:
            raise BackupError(f"{archive} is incomplete: missing {', '.join(sorted(missing))}.")


def _copy_checked(tar: tarfile.TarFile, info: tarfile.TarInfo, expected: str, dst: Path | None) -> None:
    h = hashlib.sha256()
    src = tar.extractfile(info)
    out = open(dst, "wb") if dst is not None else None
    try:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    if h.hexdigest() != expected:
        raise BackupError(f"{info.name} is damaged: its checksum does not match the manifest.")


def verify_archive(archive: Path) -> dict[str, Any]:
    """Read the whole archive and check it against its manifest; returns the manifest."""
    manifest: dict[str, Any] = {}
    for tar, info, manifest in _members(Path(archive)):
        if info.name != MANIFEST:
            _copy_checked(tar, info, manifest["files"][info.name]["sha256"], None)
    return manifest


def read_manifest(archive: Path) -> dict[str, Any]:
    for _tar, _info, manifest in _members(Path(archive)):
        return manifest
    raise BackupError(f"{archive} is empty.")  # pragma: no cover


# -- restoring --------------------------------------------------------------------------------
@dataclass
class RestoreResult:
    data_dir: Path
    manifest: dict[str, Any]
    moved_aside: Path | None

    def summary(self) -> str:
        db = self.manifest["counts"].get(DB_FILE, {})
        meta = self.manifest["counts"].get(META_FILE, {})
        text = (f"Restored {self.data_dir} from a backup of {self.manifest['created_at']} "
                f"(schema v{self.manifest['schema_version']}): {db.get('events', 0):,} events, "
                f"{db.get('persons', 0):,} persons, {meta.get('feature_flags', 0):,} flags, "
                f"{meta.get('cohorts', 0):,} cohorts.")
        if self.moved_aside:
            text += f" The previous contents are in {self.moved_aside}."
        return text


def _existing_entries(data_dir: Path) -> list[Path]:
    if not data_dir.exists():
        return []
    return sorted(p for p in data_dir.iterdir() if p.name not in IGNORED_ENTRIES and not p.name.startswith(".restore-"))


def restore(archive: Path, data_dir: Path, *, force: bool = False) -> RestoreResult:
    """Bring a backup back into ``data_dir`` (which must be empty unless ``force``; no server
    may run on it). With ``force`` the current contents are moved to ``backups/replaced-<time>/``."""
    from sightline.ops import control
    from sightline.storage import duckdb_files

    archive, data_dir = Path(archive), Path(data_dir)
    if not archive.is_file():
        raise InvalidInput(f"No backup file at {archive}.", code="not_found")
    handle = control.running_server(data_dir, wait_s=2)
    if handle is not None:
        raise InvalidInput(f"A Sightline server (pid {handle.pid}) is running on {data_dir}. Stop it "
                           f"before restoring into this data directory.", code="server_running")
    existing = _existing_entries(data_dir)
    if existing and not force:
        raise InvalidInput(f"{data_dir} is not empty ({', '.join(p.name for p in existing[:5])}). Restore "
                           f"into a new directory, or pass --force to replace its contents (they are "
                           f"moved to {data_dir / BACKUPS_DIR}/replaced-<time>/).", code="data_dir_not_empty")
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = _new_staging(data_dir, "restore")
    try:
        manifest: dict[str, Any] = {}
        for tar, info, manifest in _members(archive):
            if info.name == MANIFEST:
                continue
            dst = staging / info.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            _copy_checked(tar, info, manifest["files"][info.name]["sha256"], dst)
        # the copied stores hold what the manifest says they hold
        want = manifest.get("counts") or {}
        if (staging / DB_FILE).exists():
            got = duckdb_files.counts_of(staging / DB_FILE)
            _compare_counts(DB_FILE, want.get(DB_FILE, {}), got)
        if (staging / META_FILE).exists():
            _compare_counts(META_FILE, want.get(META_FILE, {}), sqlite_counts(staging / META_FILE))
        moved = None
        existing = _existing_entries(data_dir)
        if existing:
            if not force:  # pragma: no cover - something appeared meanwhile
                raise InvalidInput(f"{data_dir} is not empty.", code="data_dir_not_empty")
            moved = data_dir / BACKUPS_DIR / ("replaced-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
            moved.mkdir(parents=True, exist_ok=True)
            for p in existing:
                os.replace(p, moved / p.name)
        for entry in sorted(staging.iterdir()):
            os.replace(entry, data_dir / entry.name)
        _fsync_dir(data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(data_dir, manifest, moved)


def _compare_counts(store: str, want: dict[str, int], got: dict[str, int]) -> None:
    wrong = {t: (n, got.get(t)) for t, n in want.items() if got.get(t) != n}
    if wrong:
        detail = ", ".join(f"{t}: {a} expected, {b} found" for t, (a, b) in sorted(wrong.items()))
        raise BackupError(f"The restored {store} does not hold what the manifest says ({detail}).")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staged_backup_path(data_dir: Path, label: str) -> Path:
    """``<data>/backups/<label>-<UTC time>.tar``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(data_dir) / BACKUPS_DIR / f"{label}-{stamp}.tar"


__all__ = ["BackupError", "BackupResult", "RestoreResult", "Snapshot", "backup", "backup_offline",
           "build_manifest", "iter_archive", "read_manifest", "restore", "snapshot_live",
           "snapshot_offline", "verify_archive", "write_archive"]
