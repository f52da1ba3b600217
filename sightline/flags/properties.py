"""Property operators with the semantics of PostHog's flags server (spec §5.3).

``match_property(filter, properties, now)`` answers one ``{key, value, operator}`` filter against a
dict of properties. It never raises and never answers "inconclusive": the server decides every
case, including a missing property (:data:`MISSING_RESULT`). Filter values are parsed once and
cached (regexes, semver bounds, absolute dates); relative dates are resolved against ``now``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc

EQUALITY_OPERATORS = ("exact", "is_not", "is_set", "is_not_set")
TEXT_OPERATORS = ("icontains", "not_icontains", "starts_with", "not_starts_with", "ends_with",
                  "not_ends_with")
REGEX_OPERATORS = ("regex", "not_regex")
NUMERIC_OPERATORS = ("gt", "gte", "lt", "lte")
DATE_OPERATORS = ("is_date_before", "is_date_after", "is_date_exact")
SEMVER_COMPARISON_OPERATORS = ("semver_eq", "semver_neq", "semver_gt", "semver_gte", "semver_lt",
                               "semver_lte")
SEMVER_RANGE_OPERATORS = ("semver_tilde", "semver_caret", "semver_wildcard")
SEMVER_OPERATORS = SEMVER_COMPARISON_OPERATORS + SEMVER_RANGE_OPERATORS
PROPERTY_OPERATORS = frozenset(EQUALITY_OPERATORS + TEXT_OPERATORS + REGEX_OPERATORS
                               + NUMERIC_OPERATORS + DATE_OPERATORS + SEMVER_OPERATORS)
COHORT_OPERATORS = frozenset({"in", "not_in", "exact"})
VALUELESS_OPERATORS = frozenset({"is_set", "is_not_set"})

# What the server answers when the person (or group) does not have the property at all.
MISSING_RESULT = {op: False for op in PROPERTY_OPERATORS}
MISSING_RESULT.update({"is_not": True, "not_icontains": True, "not_regex": True,
                       "not_starts_with": True, "not_ends_with": True, "is_not_set": True})

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NUMERIC = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RELATIVE = re.compile(r"^-?(\d+)([hdwmy])$")


class InvalidFilterValue(ValueError):
    """A filter value its operator cannot use (raised by :func:`check_filter_value`)."""


# -- value helpers ------------------------------------------------------------------------------

def to_string(value: Any) -> str:
    """Strings as they are; everything else JSON-style (``true``, ``1.5``, ``null``, ``[1,2]``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "null"
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True,
                          default=str)
    except (TypeError, ValueError):
        return str(value)


def _is_boolish(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, str):
        return value.lower() in ("true", "false")
    if isinstance(value, list):
        return bool(value) and all(_is_boolish(v) for v in value)
    return False


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() == "true"
    if isinstance(value, list):
        return all(_truthy(v) for v in value)
    return False


def to_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not _NUMERIC.fullmatch(value):
            return None
    try:
        out = float(value)
    except (ValueError, OverflowError):
        return None
    return out if math.isfinite(out) else None


# -- regex ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


# -- semver ----------------------------------------------------------------------------------------

def _semver_part(part: str) -> int:
    if not part or not part.isdigit() or not part.isascii():
        raise ValueError(f"not a number: {part!r}")
    if len(part) > 1 and part[0] == "0":
        raise ValueError(f"leading zero: {part!r}")
    return int(part)


@functools.lru_cache(maxsize=8192)
def parse_semver(value: str) -> tuple[int, int, int]:
    """``v1.2`` → (1, 2, 0); pre-release and build suffixes are cut; leading zeros are invalid."""
    text = str(value).strip()
    if text[:1] in ("v", "V"):
        text = text[1:]
    text = text.split("-", 1)[0].split("+", 1)[0]
    parts = text.split(".")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"not a version: {value!r}")
    major = _semver_part(parts[0])
    minor = _semver_part(parts[1]) if len(parts) > 1 else 0
    patch = _semver_part(parts[2]) if len(parts) > 2 else 0
    return (major, minor, patch)


@functools.lru_cache(maxsize=4096)
def semver_bounds(operator: str, value: str) -> tuple:
    """The parsed filter value: a version, or ``(lower, upper)`` for the range operators."""
    if operator == "semver_tilde":
        major, minor, patch = parse_semver(value)
        return (major, minor, patch), (major, minor + 1, 0)
    if operator == "semver_caret":
        major, minor, patch = parse_semver(value)
        if major > 0:
            return (major, minor, patch), (major + 1, 0, 0)
        if minor > 0:
            return (0, minor, patch), (0, minor + 1, 0)
        return (0, 0, patch), (0, 0, patch + 1)
    if operator == "semver_wildcard":
        text = str(value).strip()
        if text[:1] in ("v", "V"):
            text = text[1:]
        parts = [p for p in text.split(".") if p != "*" and p != ""]
        if not parts or len(parts) > 3 or "*" in "".join(parts):
            raise ValueError(f"not a wildcard version: {value!r}")
        nums = [_semver_part(p) for p in parts]
        if len(nums) == 1:
            return (nums[0], 0, 0), (nums[0] + 1, 0, 0)
        if len(nums) == 2:
            return (nums[0], nums[1], 0), (nums[0], nums[1] + 1, 0)
        return tuple(nums), (nums[0], nums[1], nums[2] + 1)
    return parse_semver(value)


# -- dates -------------------------------------------------------------------------------------------

def _subtract_months(dt: datetime, months: int) -> datetime | None:
    index = dt.year * 12 + (dt.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    if not 1 <= year <= 9999:
        return None
    import calendar

    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


def relative_date(value: str, now: datetime) -> datetime | None:
    """``-30d``, ``2w``, ``6m``, ``1y``, ``12h``: that long before ``now`` (None if not relative)."""
    m = _RELATIVE.match(value.strip())
    if not m:
        return None
    number, unit = int(m.group(1)), m.group(2)
    if number >= 10_000:
        return None
    if unit == "h":
        return now - timedelta(hours=number)
    if unit == "d":
        return now - timedelta(days=number)
    if unit == "w":
        return now - timedelta(weeks=number)
    if unit == "m":
        return _subtract_months(now, number)
    return _subtract_months(now, number * 12)


@functools.lru_cache(maxsize=8192)
def parse_absolute_date(value: str) -> tuple[datetime, bool] | None:
    """An ISO date or date-time (naive means UTC) → (aware datetime, is_date_only)."""
    text = value.strip()
    if not text:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    elif text.upper().endswith(" UTC"):
        text = text[:-4] + "+00:00"
    text = re.sub(r" ([+-]\d{2}:?\d{2})$", r"\1", text)
    text = re.sub(r"([+-]\d{2})$", r"\1:00", text) if re.search(r"T\d", text) else text
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC), True
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt, False


def filter_date(value: Any, now: datetime) -> tuple[datetime, bool] | None:
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            return None
    rel = relative_date(value, now)
    if rel is not None:
        return rel, False
    if _RELATIVE.match(value.strip()):
        return None  # relative but out of range
    return parse_absolute_date(value)


def property_date(value: Any) -> datetime | None:
    """A person's value: a number (or numeric string) is unix seconds, otherwise a date string."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    number = to_number(value)
    if number is not None:
        try:
            return datetime.fromtimestamp(number, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        parsed = parse_absolute_date(value)
        return parsed[0] if parsed else None
    return None


# -- the matcher ---------------------------------------------------------------------------------

def check_filter_value(operator: str, value: Any) -> None:
    """Raise :class:`InvalidFilterValue` if ``value`` can never work with ``operator`` (validation)."""
    if operator not in PROPERTY_OPERATORS:
        raise InvalidFilterValue(f"Unknown operator {operator!r}.")
    if operator in VALUELESS_OPERATORS:
        return
    if value is None:
        raise InvalidFilterValue(f"Operator {operator!r} needs a value.")
    if operator in REGEX_OPERATORS:
        if not isinstance(value, str) or compile_regex(value) is None:
            raise InvalidFilterValue(f"{value!r} is not a valid regular expression.")
    elif operator in NUMERIC_OPERATORS:
        if to_number(value) is None:
            raise InvalidFilterValue(f"Operator {operator!r} needs a number, not {value!r}.")
    elif operator in DATE_OPERATORS:
        if filter_date(value, datetime.now(UTC)) is None:
            raise InvalidFilterValue(
                f"{value!r} is not a date: use ISO 8601 (2024-01-31, 2024-01-31T12:00:00Z) "
                "or a relative date like -30d, -2w, -6m, -1y, -12h.")
    elif operator in SEMVER_OPERATORS:
        try:
            semver_bounds(operator, str(value))
        except ValueError:
            raise InvalidFilterValue(f"{value!r} is not a valid version for {operator!r}.") from None
    elif operator in TEXT_OPERATORS:
        if isinstance(value, (dict, list)):
            raise InvalidFilterValue(f"Operator {operator!r} needs a single value, not a list.")


def match_value(operator: str, value: Any, prop: Any, now: datetime) -> bool:
    """Match a present property value ``prop`` against the filter ``value`` (server semantics)."""
    if operator == "exact" or operator == "is_not":
        if value == []:
            matched = _truthy(prop)
        elif _is_boolish(value):
            matched = _truthy(value) == _truthy(prop)
        elif isinstance(value, list):
            p = to_string(prop).lower()
            matched = any(to_string(v).lower() == p for v in value)
        else:
            matched = to_string(value).lower() == to_string(prop).lower()
        return matched if operator == "exact" else not matched
    if operator == "is_set":
        return True
    if operator == "is_not_set":
        return False
    if operator in TEXT_OPERATORS:
        p = to_string(prop).translate(_ASCII_LOWER)
        v = to_string(value).translate(_ASCII_LOWER)
        if operator.endswith("icontains"):
            matched = v in p
        elif operator.endswith("starts_with"):
            matched = p.startswith(v)
        else:
            matched = p.endswith(v)
        return not matched if operator.startswith("not_") else matched
    if operator in REGEX_OPERATORS:
        pattern = compile_regex(to_string(value))
        if pattern is None:
            return False
        matched = pattern.search(to_string(prop)) is not None
        return not matched if operator == "not_regex" else matched
    if operator in NUMERIC_OPERATORS:
        a, b = to_number(prop), to_number(value)
        if a is None or b is None:
            return False
        if operator == "gt":
            return a > b
        if operator == "gte":
            return a >= b
        if operator == "lt":
            return a < b
        return a <= b
    if operator in DATE_OPERATORS:
        target = filter_date(value, now)
        actual = property_date(prop)
        if target is None or actual is None:
            return False
        when, date_only = target
        if operator == "is_date_before":
            return actual < when
        if operator == "is_date_after":
            return actual > when
        if date_only:
            return actual.astimezone(UTC).date() == when.date()
        return actual == when
    if operator in SEMVER_OPERATORS:
        if prop is None or isinstance(prop, (bool, dict, list)):
            return False
        try:
            target = semver_bounds(operator, to_string(value))
            actual = parse_semver(to_string(prop))
        except ValueError:
            return False
        if operator in SEMVER_RANGE_OPERATORS:
            lower, upper = target
            return lower <= actual < upper
        if operator == "semver_eq":
            return actual == target
        if operator == "semver_neq":
            return actual != target
        if operator == "semver_gt":
            return actual > target
        if operator == "semver_gte":
            return actual >= target
        if operator == "semver_lt":
            return actual < target
        return actual <= target
    return False


def match_property(flt: dict, properties: dict, now: datetime) -> bool:
    """One property filter against ``properties`` with the server's missing-property rules."""
    operator = flt.get("operator") or "exact"
    key = flt.get("key")
    if key not in properties:
        return MISSING_RESULT.get(operator, False)
    return match_value(operator, flt.get("value"), properties[key], now)
