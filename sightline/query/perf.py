"""Cheaper spellings of a few expressions the insight builders share (same values, less work).

Each falls back to the dialect's general form where the shortcut does not apply (another
engine, a time zone other than UTC), so builders can call them unconditionally.
"""

from __future__ import annotations

from sightline.query.dialect import DuckDBDialect, Params

# IANA names of UTC (zoneinfo keys a project may carry)
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu",
                       "GMT", "Etc/GMT", "Etc/GMT+0", "Etc/GMT-0", "Etc/GMT0", "GMT0", "GMT+0", "GMT-0",
                       "Etc/Greenwich", "Greenwich"})


def local_time(d: DuckDBDialect, expr: str, tz_param: str, tz_key: str) -> str:
    """``d.local(expr, tz_param)``: the instant as wall-clock time in the project's zone.

    For a UTC project on DuckDB the wall clock is the epoch microseconds read as a naive
    timestamp (``make_timestamp(epoch_us(ts))``), about twice as fast over millions of rows
    as ``timezone('UTC', ts)`` (an ICU call per row) and the same value."""
    if d.name == "duckdb" and tz_key in UTC_NAMES:
        return f"make_timestamp(epoch_us({expr}))"
    return d.local(expr, tz_param)


def person_profile_condition(d: DuckDBDialect, p: Params, column: str = "e.properties") -> str:
    """Events that are not personless: ``$process_person_profile`` is not ``false``.

    On DuckDB the JSON is parsed only when its text could hold that key (it names it, or has
    a backslash escape that could spell it); most events' properties never mention it."""
    cond = f"coalesce({d.json_property(p, column, '$process_person_profile')}, '') <> 'false'"
    if d.name != "duckdb":
        return cond
    return (f"(CASE WHEN contains({column}, 'process_person_profile') OR contains({column}, '\\') "
            f"THEN {cond} ELSE true END)")
