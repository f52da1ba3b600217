"""The handful of SQL differences between backends, in one place per backend.

Builders write one SQL text per query; whatever differs between DuckDB and ClickHouse goes
through a method of :class:`DuckDBDialect` or :class:`ClickHouseDialect` (function names, JSON
access, time zones and truncation, casts, list functions, quantiles). Syntax both engines share
(``GROUP BY ALL``, ``FILTER (WHERE …)``, ``ASOF LEFT JOIN``, named windows, ``INTERVAL n DAY``,
``x::INT``, ``* REPLACE``) is written directly. The ClickHouse store runs every statement with
``join_use_nulls=1`` and ``aggregate_functions_null_for_empty=1`` so outer joins and empty
aggregates give SQL NULLs, as in DuckDB.

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

    def cast_timestamp(self, expr: str) -> str:
        """A (valid) timestamp text parameter as an instant."""
        return f"CAST({expr} AS TIMESTAMPTZ)"

    def to_date(self, expr: str) -> str:
        return f"CAST({expr} AS DATE)"

    def cast_instant(self, expr: str) -> str:
        """A TIMESTAMPTZ/datetime parameter as an instant."""
        return f"CAST({expr} AS TIMESTAMPTZ)"

    def date_param(self, expr: str) -> str:
        """An ISO date/time text parameter as a date."""
        return f"CAST({expr} AS DATE)"

    def null_timestamp(self) -> str:
        return "NULL::TIMESTAMPTZ"

    def to_text(self, expr: str) -> str:
        return f"CAST({expr} AS VARCHAR)"

    def try_uuid(self, expr: str) -> str:
        return f"TRY_CAST({expr} AS UUID)"

    def local(self, expr: str, tz_param: str) -> str:
        """A UTC instant as wall-clock time in the project's time zone."""
        return f"timezone({tz_param}, {expr})"

    def trunc(self, unit: str, local_expr: str, week_start_monday: bool = False) -> str:
        if unit not in INTERVAL_UNITS:
            raise ValueError(unit)
        if unit == "week" and not week_start_monday:  # PostHog's default: weeks start on Sunday
            return f"(date_trunc('week', {local_expr} + INTERVAL 1 DAY) - INTERVAL 1 DAY)"
        return f"date_trunc('{unit}', {local_expr})"

    def period_diff(self, unit: str, a: str, b: str) -> str:
        """Whole periods from bucket ``a`` to bucket ``b`` (both truncated to ``unit``)."""
        if unit not in INTERVAL_UNITS:
            raise ValueError(unit)
        if unit == "week":
            return f"(date_diff('day', {a}, {b}) // 7)"
        return f"date_diff('{unit}', {a}, {b})"

    def seconds_between(self, start: str, end: str) -> str:
        """Whole-second boundaries between two instants (ClickHouse's dateDiff semantics)."""
        return f"date_diff('second', {start}, {end})"

    def epoch(self, expr: str) -> str:
        """Seconds since 1970 (fractional) of an instant."""
        return f"epoch({expr})"

    def epoch_ms(self, expr: str) -> str:
        # whole milliseconds, truncated like ClickHouse's intDiv (DuckDB's epoch_ms rounds half up)
        return f"(epoch_us({expr}) // 1000)"

    def quantile(self, expr: str, q: float) -> str:
        return f"quantile_cont({expr}, {float(q)})"

    def median(self, expr: str) -> str:
        return f"median({expr})"

    def count_distinct(self, expr: str) -> str:
        return f"count(DISTINCT {expr})"

    def arg_min(self, value: str, by: str) -> str:
        return f"arg_min({value}, {by})"

    def arg_max(self, value: str, by: str) -> str:
        return f"arg_max({value}, {by})"

    def has(self, list_expr: str, value: str) -> str:
        """Whether a list contains a value (NULL-safe: a NULL value is not contained)."""
        return f"list_contains({list_expr}, {value})"

    def unnest(self, list_expr: str) -> str:
        return f"unnest({list_expr})"

    def list_agg(self, expr: str, order: str) -> str:
        """The values of a group as a list, ordered."""
        return f"list({expr} ORDER BY {order})"

    def list_agg_sorted(self, expr: str) -> str:
        return f"list({expr} ORDER BY {expr})"

    def except_columns(self, star: str, columns: list[str]) -> str:
        return f"{star} EXCLUDE ({', '.join(columns)})"

    def not_distinct(self, a: str, b: str) -> str:
        return f"{a} IS NOT DISTINCT FROM {b}"

    def distinct(self, a: str, b: str) -> str:
        return f"{a} IS DISTINCT FROM {b}"

    def starts_with(self, expr: str, prefix: str) -> str:
        return f"starts_with({expr}, {prefix})"

    def string(self, text: str) -> str:
        """A constant (internal, never user text) as a string literal."""
        return "'" + text.replace("'", "''") + "'"

    def regexp_replace(self, expr: str, pattern: str, replacement: str, all_matches: bool = False) -> str:
        flags = ", 'g'" if all_matches else ""
        return f"regexp_replace({expr}, {pattern}, {replacement}{flags})"

    def regexp_matches(self, expr: str, pattern: str) -> str:
        return f"regexp_matches({expr}, {pattern})"

    def regexp_extract(self, expr: str, pattern: str, group: int) -> str:
        return f"regexp_extract({expr}, {pattern}, {int(group)})"

    def ilike_contains(self, expr: str, needle_param: str) -> str:
        return f"contains(lower({expr}), lower({needle_param}))"

    def regex(self, expr: str, pattern_param: str) -> str:
        return f"regexp_matches({expr}, {pattern_param})"

    def distinct_ids_of(self, person: str, project: str | None = None, among: str = "") -> tuple[str, str]:
        """(select expression, join clause) giving the sorted distinct ids of the person whose id is
        ``person`` (a column of the outer row, of table ``pr``); ``among`` is a subquery of the
        person ids that can occur (engines without correlated subqueries read only those)."""
        cond = f"d.project_id = {project} AND " if project else ""
        return (f"(SELECT list(d.distinct_id ORDER BY d.distinct_id) FROM person_distinct_ids d "
                f"WHERE {cond}d.person_id = {person})"), ""


DUCKDB = DuckDBDialect()


class ClickHouseDialect(DuckDBDialect):
    """ClickHouse (a server through clickhouse-connect, or in process through chdb).

    Local wall times are ``DateTime64(6, 'Etc/UTC')``: the instant shifted by the zone's offset
    at that instant, so truncation and arithmetic run in a fixed zone exactly like DuckDB's
    ``TIMESTAMP``; the store hands them back as naive datetimes.
    """

    name = "clickhouse"

    def event_property(self, params: Params, key: str, alias: str = "e") -> str:
        col = HOT_PROPERTIES.get(key)
        if col is not None:
            return f"{alias}.{col}"
        return self.json_property(params, f"{alias}.properties", key)

    def json_property(self, params: Params, column: str, key: str) -> str:
        # Nullable(String): strings unquoted, other values as JSON text, null/missing → NULL
        return f"JSONExtract({column}, {params.add(key, 'key')}, 'Nullable(String)')"

    def json_has(self, params: Params, column: str, key: str) -> str:
        return f"(JSONType({column}, {params.add(key, 'key')}) <> 'Null')"

    def to_number(self, expr: str) -> str:
        return f"toFloat64OrNull({expr})"

    def to_timestamp(self, expr: str) -> str:
        return f"parseDateTime64BestEffortOrNull({expr}, 6, 'UTC')"

    def cast_timestamp(self, expr: str) -> str:
        return f"parseDateTime64BestEffort({expr}, 6, 'UTC')"

    def to_date(self, expr: str) -> str:
        return f"toDate({expr})"

    def cast_instant(self, expr: str) -> str:
        return f"toDateTime64({expr}, 6, 'UTC')"

    def date_param(self, expr: str) -> str:
        return f"toDate(parseDateTime64BestEffort({expr}, 6, 'UTC'))"

    def null_timestamp(self) -> str:
        return "CAST(NULL AS Nullable(DateTime64(6, 'UTC')))"

    def to_text(self, expr: str) -> str:
        return f"toString({expr})"

    def try_uuid(self, expr: str) -> str:
        return f"toUUIDOrNull(toString({expr}))"

    def local(self, expr: str, tz_param: str) -> str:
        return (f"toTimeZone(addSeconds(toDateTime64({expr}, 6, 'UTC'), "
                f"timeZoneOffset(toTimeZone({expr}, {tz_param}))), 'Etc/UTC')")

    def trunc(self, unit: str, local_expr: str, week_start_monday: bool = False) -> str:
        if unit not in INTERVAL_UNITS:
            raise ValueError(unit)
        if unit == "minute":
            inner = f"toStartOfMinute({local_expr})"
        elif unit == "hour":
            inner = f"toStartOfHour({local_expr})"
        elif unit == "day":
            inner = f"toStartOfDay({local_expr})"
        elif unit == "week":
            inner = f"toStartOfWeek({local_expr}, {1 if week_start_monday else 0})"
        else:
            inner = f"toStartOfMonth({local_expr})"
        return f"toDateTime64({inner}, 6, 'Etc/UTC')"

    def period_diff(self, unit: str, a: str, b: str) -> str:
        if unit not in INTERVAL_UNITS:
            raise ValueError(unit)
        if unit == "week":
            return f"intDiv(dateDiff('day', {a}, {b}), 7)"
        return f"dateDiff('{unit}', {a}, {b})"

    def seconds_between(self, start: str, end: str) -> str:
        return f"dateDiff('second', {start}, {end})"

    def epoch(self, expr: str) -> str:
        return f"(toUnixTimestamp64Micro({expr}) / 1000000)"

    def epoch_ms(self, expr: str) -> str:
        return f"intDiv(toUnixTimestamp64Micro({expr}), 1000)"

    def quantile(self, expr: str, q: float) -> str:
        # linear interpolation between the closest ranks, like DuckDB's quantile_cont
        return f"quantileExactInclusive({float(q)})({expr})"

    def median(self, expr: str) -> str:
        return self.quantile(expr, 0.5)

    def count_distinct(self, expr: str) -> str:
        return f"uniqExact({expr})"

    def arg_min(self, value: str, by: str) -> str:
        return f"argMin({value}, {by})"

    def arg_max(self, value: str, by: str) -> str:
        return f"argMax({value}, {by})"

    def has(self, list_expr: str, value: str) -> str:
        return f"has({list_expr}, {value})"

    def unnest(self, list_expr: str) -> str:
        return f"arrayJoin({list_expr})"

    def list_agg(self, expr: str, order: str) -> str:
        return f"arrayMap(x -> x.2, arraySort(x -> x.1, groupArray(({order}, {expr}))))"

    def list_agg_sorted(self, expr: str) -> str:
        return f"arraySort(groupArray({expr}))"

    def except_columns(self, star: str, columns: list[str]) -> str:
        return f"{star} EXCEPT ({', '.join(columns)})"

    def not_distinct(self, a: str, b: str) -> str:
        return f"isNotDistinctFrom({a}, {b})"

    def distinct(self, a: str, b: str) -> str:
        return f"NOT isNotDistinctFrom({a}, {b})"

    def starts_with(self, expr: str, prefix: str) -> str:
        return f"startsWith({expr}, {prefix})"

    def string(self, text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def regexp_replace(self, expr: str, pattern: str, replacement: str, all_matches: bool = False) -> str:
        fn = "replaceRegexpAll" if all_matches else "replaceRegexpOne"
        return f"{fn}({expr}, {pattern}, {replacement})"

    def regexp_matches(self, expr: str, pattern: str) -> str:
        return f"match({expr}, {pattern})"

    def regexp_extract(self, expr: str, pattern: str, group: int) -> str:
        return f"coalesce(extractGroups({expr}, {pattern})[{int(group)}], '')"

    def ilike_contains(self, expr: str, needle_param: str) -> str:
        return f"(positionCaseInsensitiveUTF8({expr}, {needle_param}) > 0)"

    def regex(self, expr: str, pattern_param: str) -> str:
        return f"match({expr}, {pattern_param})"

    def distinct_ids_of(self, person: str, project: str | None = None, among: str = "") -> tuple[str, str]:
        keys = ["person_id"] + (["project_id"] if project else [])
        where = f" WHERE person_id IN ({among})" if among else ""
        on = f"dids.person_id = {person}" + (f" AND dids.project_id = {project}" if project else "")
        return ("dids.ids", f" LEFT JOIN (SELECT {', '.join(keys)}, arraySort(groupArray(distinct_id)) AS ids "
                            f"FROM person_distinct_ids{where} GROUP BY {', '.join(keys)}) dids ON {on}")


CLICKHOUSE = ClickHouseDialect()


def dialect_for(storage) -> DuckDBDialect:
    name = getattr(storage, "dialect", "duckdb")
    if name == "duckdb":
        return DUCKDB
    if name == "clickhouse":
        return CLICKHOUSE
    raise NotImplementedError(f"no SQL dialect for {name}")
