"""Property filters → SQL conditions, for event, person and group properties.

Semantics follow PostHog's queries (not its flag matcher): comparisons on event data are
case-sensitive for ``exact``; ``is_not`` / ``not_icontains`` / ``not_regex`` also match rows
where the property is missing; numeric operators compare numbers and skip non-numeric values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sightline.errors import InvalidInput
from sightline.query.dates import resolve
from sightline.query.dialect import DuckDBDialect, Params  # (ClickHouseDialect is one)
from sightline.query.model import PropertyFilter, PropertyGroup

NULL_SENTINEL = "$$_posthog_breakdown_null_$$"
OTHER_SENTINEL = "$$_posthog_breakdown_other_$$"

# SQL that yields the current person id of an event row ``e`` joined with overrides ``o``
PERSON_ID = "coalesce(o.override_person_id, e.person_id)"


@dataclass
class Scope:
    """What one query needs besides ``events e``: the parameters and the extra joins."""

    project_id: int
    dialect: DuckDBDialect
    params: Params = field(default_factory=Params)
    person_join: bool = False
    session_join: bool = False
    group_joins: set[int] = field(default_factory=set)
    tz: str = "UTC"
    cohorts: dict = field(default_factory=dict)  # id → cohort (with "members" when static)
    now: Any = None

    def __post_init__(self) -> None:
        self.project = self.params.add(self.project_id, "project")

    # expressions for one property, by type
    def prop(self, key: str, kind: str = "event", group_type_index: int | None = None) -> str:
        if kind == "event":
            return self.dialect.event_property(self.params, key)
        if kind == "person":
            self.person_join = True
            return self.dialect.json_property(self.params, "p.properties", key)
        if kind == "group":
            if group_type_index is None or not 0 <= group_type_index <= 4:
                raise InvalidInput("Group property filters need a `group_type_index` from 0 to 4.",
                                   attr="group_type_index")
            self.group_joins.add(group_type_index)
            return self.dialect.json_property(self.params, f"g{group_type_index}.properties", key)
        if kind == "session":
            from sightline.query.sessions import SESSION_COLUMNS

            if key not in SESSION_COLUMNS or key in ("session_id", "distinct_id", "person_id"):
                names = ", ".join(c for c in SESSION_COLUMNS if c.startswith("$"))
                raise InvalidInput(f"Unknown session property {key!r}; use one of {names}.", attr="key")
            self.session_join = True
            return self.dialect.to_text(f'ses."{key}"')
        raise InvalidInput(f"Property filters of type {kind!r} are not supported yet.", attr="type")

    def joins(self) -> str:
        """The joins every events query of this scope needs (persons and groups on demand)."""
        sql = " LEFT JOIN person_overrides o ON o.project_id = e.project_id AND o.old_person_id = e.person_id"
        if self.person_join:
            sql += f" LEFT JOIN persons p ON p.id = {PERSON_ID}"
        if self.session_join:
            from sightline.query.sessions import sessions_sql

            sql += (f" LEFT JOIN ({sessions_sql(self.project, dialect=self.dialect)}) ses "
                    f"ON ses.session_id = e.session_id")
        for k in sorted(self.group_joins):
            sql += (f" LEFT JOIN groups g{k} ON g{k}.project_id = e.project_id AND "
                    f"g{k}.group_type_index = {k} AND g{k}.group_key = e.group_{k}")
        return sql


def _values(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _number(v: Any, key: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise InvalidInput(f"Filter on {key!r} compares numbers, but {v!r} is not a number.",
                           attr="value") from None


def filter_sql(f: PropertyFilter, scope: Scope) -> str:
    if f.type == "cohort":
        from sightline.query.cohorts import cohort_sql

        sql = cohort_sql(f.value, scope, scope.cohorts, scope.now)
        return f"(NOT {sql})" if f.operator in ("not_in", "is_not") else sql
    expr = scope.prop(f.key, f.type, f.group_type_index)
    d, params, op = scope.dialect, scope.params, f.operator
    if op in ("is_set", "is_not_set"):
        test = f"({expr} IS NOT NULL)"
        return test if op == "is_set" else f"(NOT {test})"
    if f.value is None and op not in ("is_set", "is_not_set"):
        raise InvalidInput(f"Filter on {f.key!r} with operator {op!r} needs a `value`.", attr="value")
    if op in ("exact", "is_not", "in", "not_in"):
        values = _values(f.value)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            nums = params.add([float(v) for v in values], "num")
            test = d.has(nums, d.to_number(expr))
        else:
            texts = params.add([_text(v) for v in values], "val")
            test = d.has(texts, expr)
        if op in ("exact", "in"):
            return f"coalesce({test}, false)"
        return f"(NOT coalesce({test}, false))"
    if op in ("icontains", "not_icontains"):
        needle = params.add(_text(f.value), "val")
        test = f"coalesce({d.ilike_contains(expr, needle)}, false)"
        return test if op == "icontains" else f"(NOT {test})"
    if op in ("regex", "not_regex"):
        import re

        try:
            re.compile(str(f.value))
        except re.error as exc:
            raise InvalidInput(f"Invalid regular expression {f.value!r}: {exc}.", attr="value") from None
        pattern = params.add(str(f.value), "re")
        test = f"coalesce({d.regex(expr, pattern)}, false)"
        return test if op == "regex" else f"(NOT {test})"
    if op in ("gt", "gte", "lt", "lte"):
        sym = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        num = params.add(_number(f.value, f.key), "num")
        return f"coalesce({d.to_number(expr)} {sym} {num}, false)"
    if op in ("is_date_before", "is_date_after", "is_date_exact"):
        point = resolve(str(f.value), None, interval="day", tz=scope.tz).local_from
        when = params.add(point.isoformat(), "date")
        ts = d.to_timestamp(expr)
        if op == "is_date_exact":
            return f"coalesce({d.to_date(ts)} = {d.date_param(when)}, false)"
        sym = "<" if op == "is_date_before" else ">"
        return f"coalesce({ts} {sym} {d.cast_timestamp(when)}, false)"
    raise InvalidInput(f"Unknown operator {op!r}.", attr="operator")


def properties_sql(props: list[PropertyFilter] | PropertyGroup | None, scope: Scope) -> str:
    """A condition for a filter list (ANDed) or a nested AND/OR group; ``true`` when empty."""
    if props is None:
        return "true"
    if isinstance(props, list):
        parts = [filter_sql(f, scope) for f in props]
        return "(" + " AND ".join(parts) + ")" if parts else "true"
    parts = [properties_sql(v, scope) if isinstance(v, PropertyGroup) else filter_sql(v, scope)
             for v in props.values]
    if not parts:
        return "true"
    return "(" + f" {props.type} ".join(parts) + ")"


def test_account_filters(settings: dict) -> list[PropertyFilter]:
    """The project's "filter out internal and test users" filters."""
    raw = settings.get("test_account_filters") or []
    return [PropertyFilter.model_validate(f) for f in raw]
