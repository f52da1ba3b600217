"""The core every door (HTTP, CLI, Python API) goes through.

``sightline.open("data-dir")`` gives a :class:`Sightline`: the metadata store, the event
store, the identity graph and the group-commit writer of one data directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from sightline.errors import InvalidInput, NotFound
from sightline.ingest.normalize import NormalizedBatch, Rejection, normalize_batch
from sightline.ingest.writer import Writer, WriteResult
from sightline.meta import MetaStore, Project
from sightline.metrics import Metrics
from sightline.persons.identity import IdentityState
from sightline.storage import Storage, open_storage

if TYPE_CHECKING:
    from sightline.query.result import QueryResult

log = logging.getLogger("sightline")
UTC = timezone.utc
DEFAULT_DATA_DIR = "./sightline-data"


@dataclass
class Settings:
    """Limits and switches of one running Sightline (CLI flags and env set them)."""

    max_body_bytes: int = 20 * 1024 * 1024      # raw request body, as sent
    max_decoded_bytes: int = 20 * 1024 * 1024   # after decompression (decompression-bomb guard)


@dataclass
class BootstrapInfo:
    project: Project
    project_created: bool
    new_api_key: str | None  # plain value, only when it was created now and not pinned


@dataclass
class IngestResult:
    received: int
    stored: int
    duplicates: int
    dropped: int
    rejected: list[Rejection] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"received": self.received, "stored": self.stored, "duplicates": self.duplicates,
                "dropped": self.dropped, "rejected": [r.to_json() for r in self.rejected]}


class Sightline:
    """One data directory: projects, keys, events and persons."""

    def __init__(self, data_dir: str | Path = DEFAULT_DATA_DIR, *, project_token: str | None = None,
                 api_key: str | None = None, store: str | None = None,
                 read_only: bool = False, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.metrics = Metrics()
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.read_only = read_only
        from sightline.ops import migrations

        # refuse data of a newer Sightline; back up and upgrade data of an older one
        self.upgrade = migrations.prepare(self.data_dir, read_only=read_only)
        self.meta = MetaStore(self.data_dir / "meta.sqlite")
        self.storage: Storage = open_storage(self.data_dir, store=store, read_only=read_only)
        # An explicit token pins (and may rotate) the project's token; the environment only
        # names it when the project is created, so a stray variable never rotates a live token.
        self.bootstrap_info = self._bootstrap(project_token, os.environ.get("SIGHTLINE_PROJECT_TOKEN"),
                                              api_key or os.environ.get("SIGHTLINE_API_KEY"))
        self._writer: Writer | None = None
        from sightline.flags.service import FlagService

        # feature flags: definitions hot in memory; person/group properties from the live identity
        self.flags = FlagService(self.meta, lambda: self._writer.identity if self._writer else None,
                                 behavioral_members=self._behavioral_cohort_members)

    # -- set-up --------------------------------------------------------------------------
    def _bootstrap(self, token: str | None, env_token: str | None, api_key: str | None) -> BootstrapInfo:
        project = self.meta.default_project()
        created = False
        if project is None:
            project = self.meta.create_project("Default project", token=token or env_token)
            created = True
        elif token and project.api_token != token:
            project = self.meta.set_project_token(project.id, token)
        new_key = None
        if api_key:
            self.meta.create_api_key("pinned (SIGHTLINE_API_KEY)", api_key)
        elif not self.meta.has_api_keys():
            new_key = self.meta.create_api_key("created on first start")
        return BootstrapInfo(project, created, new_key)

    @property
    def project(self) -> Project:
        """The default project (the first one created)."""
        return self.meta.default_project()

    def resolve_project(self, project_id: int | str | None = None) -> Project:
        if project_id in (None, "@current"):
            return self.project
        try:
            project = self.meta.project(int(project_id))
        except (TypeError, ValueError):
            project = None
        if project is None:
            raise NotFound(f"Project {project_id} does not exist.")
        return project

    # -- the write path ------------------------------------------------------------------
    @property
    def writer(self) -> Writer:
        if self._writer is None:
            if self.read_only:
                raise InvalidInput("This Sightline was opened read-only.", code="read_only")
            # SIGHTLINE_FLUSH_INTERVAL: seconds between stores of the ingestion log (default 1)
            interval = float(os.environ.get("SIGHTLINE_FLUSH_INTERVAL", "1") or 1)
            self._writer = Writer(self.storage, self._load_identity, wal_dir=self.data_dir / "wal",
                                  flush_interval=interval)
            self._writer.on_commit = self.metrics.observe_write_batch
            self._writer.start()
        return self._writer

    def _load_identity(self) -> IdentityState:
        state = IdentityState()
        self.storage.load_identity(state)
        return state

    def normalize(self, raw_events: list[Any], *, sent_at: datetime | None = None,
                  now: datetime | None = None) -> NormalizedBatch:
        return normalize_batch(raw_events, now=now, sent_at=sent_at)

    def ingest(self, raw_events: Iterable[Any], *, project_id: int | None = None,
               sent_at: datetime | None = None, now: datetime | None = None) -> IngestResult:
        """Validate and durably store PostHog-shaped events (blocking)."""
        raw = list(raw_events)
        project = self.resolve_project(project_id)
        batch = self.normalize(raw, sent_at=sent_at, now=now)
        result = self.writer.write(project.id, batch.events) if batch.events else WriteResult(0, 0)
        self.sync()  # the Python API reads its own writes
        return IngestResult(len(raw), result.stored, result.duplicates, batch.dropped, batch.rejected)

    def capture(self, event: str, distinct_id: str, properties: dict | None = None, *,
                timestamp: datetime | str | None = None, uuid: str | None = None,
                project_id: int | None = None) -> IngestResult:
        """Capture one event from Python, like ``posthog.capture``."""
        raw: dict[str, Any] = {"event": event, "distinct_id": distinct_id,
                               "properties": dict(properties or {})}
        if timestamp is not None:
            raw["timestamp"] = timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp
        if uuid is not None:
            raw["uuid"] = uuid
        return self.ingest([raw], project_id=project_id)

    def _behavioral_cohort_members(self, project_id: int, cohort_ids: list[int]) -> dict[str, set[int]]:
        """distinct id → the given (behavioural) cohorts it is in, computed over events now."""
        from sightline.query import cohorts

        out: dict[str, set[int]] = {}
        for cid in cohort_ids:
            for person in cohorts.members(self, project_id, cid, limit=10_000_000):
                for did in person["distinct_ids"]:
                    out.setdefault(did, set()).add(cid)
        return out

    # -- reading ---------------------------------------------------------------------------
    def query(self, query: dict, *, project_id: int | None = None) -> "QueryResult":
        """Run an insight or SQL query (PostHog query JSON); see :mod:`sightline.query`."""
        from sightline.query.result import QueryResult
        from sightline.query.runner import run_query

        return QueryResult(run_query(self, query, project_id=project_id))

    # -- lifecycle -----------------------------------------------------------------------
    def sync(self) -> None:
        """Wait until every acknowledged event is visible to queries (read-your-writes)."""
        if self._writer is not None:
            self._writer.sync()

    def flush(self) -> None:
        """Wait until everything submitted so far is stored."""
        if self._writer is not None:
            self._writer.write(self.project.id, [])
            self._writer.sync()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self.storage.close()
        self.meta.close()

    def __enter__(self) -> "Sightline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open(data_dir: str | Path = DEFAULT_DATA_DIR, **kwargs: Any) -> Sightline:  # noqa: A001
    """Open a Sightline data directory (created if missing)."""
    return Sightline(data_dir, **kwargs)
