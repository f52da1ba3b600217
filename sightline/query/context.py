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
    timeout_s: float = 60.0  # each statement; the project setting query_timeout_seconds changes it

    @property
    def dialect(self):
        return dialect_for(self.storage)

    @property
    def week_start_monday(self) -> bool:
        return self.settings.get("week_start_day", 0) == 1

    def scope(self) -> Scope:
        return Scope(self.project_id, self.dialect, tz=self.timezone, cohorts=self.cohorts, now=self.now)

    def execute(self, sql: str, params: dict[str, Any], prepare: Any = None) -> list[tuple]:
        """Rows of ``sql``. ``prepare(cursor, sql, params) -> (sql, params)`` (DuckDB only; the
        builder makes sure) rewrites the statement first, inside its read-only transaction."""
        everything = dict(params)
        # builders may add a parameter they end up not using; DuckDB refuses unused ones
        used = set(_PARAM.findall(sql))
        params = {k: v for k, v in params.items() if k in used}
        started = time.perf_counter()
        kwargs: dict[str, Any] = {}
        if prepare is not None:
            def prepare_used(cur: Any, text: str, _params: dict) -> tuple[str, dict]:
                text, values = prepare(cur, text, dict(everything))
                found = set(_PARAM.findall(text))
                return text, {k: v for k, v in values.items() if k in found}

            kwargs["prepare"] = prepare_used
        if hasattr(self.storage, "query"):
            from sightline.errors import InvalidInput
            from sightline.storage.base import QueryError, QueryTimeout

            try:
                rows = self.storage.query(sql, params, timeout_s=self.timeout_s, **kwargs).rows
            except QueryTimeout:
                raise InvalidInput(f"The query ran longer than its limit of {self.timeout_s:g} s; narrow the "
                                   "date range or the filters.", code="query_timeout", status=408) from None
            except QueryError as exc:
                raise InvalidInput(f"The query failed: {exc}", code="query_failed") from None
        else:
            rows = self.storage.execute(sql, params).rows
        self.timings.append((sql[:80], time.perf_counter() - started))
        return rows

    def earliest_event(self) -> datetime | None:
        rows = self.storage.execute("SELECT min(timestamp) FROM events WHERE project_id = $p",
                                    {"p": self.project_id}).rows
        value = rows[0][0] if rows else None
        return value.astimezone(UTC) if value else None
