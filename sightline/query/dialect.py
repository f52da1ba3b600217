"""The handful of SQL differences between backends, in one place per backend.

Query builders write SQL through a :class:`Dialect` and a :class:`Params` collector: values are
always bound parameters; property names become JSON-pointer *parameters* too, so no user text is
ever pasted into SQL. Only validated, internal identifiers (materialized column names, interval
units from a fixed set) appear literally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sightline.storage.schema import HOT_PROPERTIES

INTERVAL_UNITS = {"minute", "hour", "day", "week", "month"}


@dataclass
class Params:
    """Collects bound parameters and hands out their placeholders."""

    values: dict[str, Any] = field(default_factory=dict)
    _n: int = 0

    def add(self, value: Any, hint: str = "p") -> str:
        self._n += 1
        name = f"{hint}_{self._n}"
        self.values[name] = value
        return "$" + name


def json_pointer(key: str) -> str:
    """RFC 6901 pointer for one top-level key."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


class DuckDBDialect:
    name = "duckdb"

    def event_property(self, params: Params, key: str, alias: str = "e") -> str:
        """A text expression for an event property (NULL when missing)."""
        col = HOT_PROPERTIES.get(key)
        if col is not None:
            return f"{alias}.{col}"
        return f"json_extract_string({alias}.properties, {params.add(json_pointer(key), 'path')})"

    def json_property(self, params: Params, column: str, key: str) -> str:
        return f"json_extract_string({column}, {params.add(json_pointer(key), 'path')})"

    def json_has(self, params: Params, column: str, key: str) -> str:
        return f"(json_extract({column}, {params.add(json_pointer(key), 'path')}) IS NOT NULL)"

    def to_number(self, expr: str) -> str:
        return f"TRY_CAST({expr} AS DOUBLE)"

    def to_timestamp(self, expr: str) -> str:
        return f"TRY_CAST({expr} AS TIMESTAMPTZ)"

    def local(self, expr: str, tz_param: str) -> str:
        """A UTC instant as wall-clock time in the project's time zone."""
        return f"timezone({tz_param}, {expr})"

    def trunc(self, unit: str, local_expr: str, week_start_monday: bool = False) -> str:
        if unit not in INTERVAL_UNITS:
            raise ValueError(unit)
        if unit == "week" and not week_start_monday:  # PostHog's default: weeks start on Sunday
            return f"(date_trunc('week', {local_expr} + INTERVAL 1 DAY) - INTERVAL 1 DAY)"
        return f"date_trunc('{unit}', {local_expr})"

    def quantile(self, expr: str, q: float) -> str:
        return f"quantile_cont({expr}, {float(q)})"

    def count_distinct(self, expr: str) -> str:
        return f"count(DISTINCT {expr})"

    def ilike_contains(self, expr: str, needle_param: str) -> str:
        return f"contains(lower({expr}), lower({needle_param}))"

    def regex(self, expr: str, pattern_param: str) -> str:
        return f"regexp_matches({expr}, {pattern_param})"


DUCKDB = DuckDBDialect()


def dialect_for(storage) -> DuckDBDialect:
    if getattr(storage, "dialect", "duckdb") == "duckdb":
        return DUCKDB
    raise NotImplementedError(f"no SQL dialect for {storage.dialect}")
