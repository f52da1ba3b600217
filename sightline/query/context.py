"""What every query builder needs: the project, its time zone and settings, storage, "now"."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sightline.query.dialect import dialect_for
from sightline.query.filters import Scope

UTC = timezone.utc
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class QueryContext:
    storage: Any
    project_id: int
    timezone: str = "UTC"
    settings: dict = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings: list[tuple[str, float]] = field(default_factory=list)
    cohorts: dict = field(default_factory=dict)

    @property
    def dialect(self):
        return dialect_for(self.storage)

    @property
    def week_start_monday(self) -> bool:
        return self.settings.get("week_start_day", 0) == 1

    def scope(self) -> Scope:
        return Scope(self.project_id, self.dialect, tz=self.timezone, cohorts=self.cohorts, now=self.now)

    def execute(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        # builders may add a parameter they end up not using; DuckDB refuses unused ones
        used = set(_PARAM.findall(sql))
        params = {k: v for k, v in params.items() if k in used}
        started = time.perf_counter()
        rows = self.storage.execute(sql, params).rows
        self.timings.append((sql[:80], time.perf_counter() - started))
        return rows

    def earliest_event(self) -> datetime | None:
        rows = self.storage.execute("SELECT min(timestamp) FROM events WHERE project_id = $p",
                                    {"p": self.project_id}).rows
        value = rows[0][0] if rows else None
        return value.astimezone(UTC) if value else None
