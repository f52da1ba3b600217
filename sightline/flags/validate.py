"""Validation of flag definitions from the API and the CLI: precise 400s, PostHog-shaped output.

:func:`clean_flag` takes what a client sent (a full definition on create, a partial one on
update) and returns the stored document, raising :class:`~sightline.errors.InvalidInput` with
``attr`` naming the offending field (``filters.groups[0].properties[1].operator``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import orjson

from sightline.errors import InvalidInput
from sightline.flags.properties import (COHORT_OPERATORS, PROPERTY_OPERATORS, VALUELESS_OPERATORS,
                                        InvalidFilterValue, check_filter_value)

KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
MAX_KEY = 400
MAX_GROUP_TYPE_INDEX = 4
FLAG_FIELDS = {"key", "name", "active", "filters", "ensure_experience_continuity", "deleted",
               "tags", "description", "evaluation_runtime", "bucketing_identifier", "version",
               "rollout_percentage"}
READ_ONLY_FIELDS = {"id", "team_id", "project_id", "created_at", "created_by", "updated_at",
                    "updated_by", "last_modified_by", "is_simple_flag", "has_encrypted_payloads"}
FILTER_FIELDS = {"groups", "multivariate", "payloads", "aggregation_group_type_index", "super_groups",
                 "holdout", "holdout_groups", "feature_enrollment", "early_exit",
                 "bucketing_identifier"}
CONDITION_FIELDS = {"properties", "rollout_percentage", "variant", "aggregation_group_type_index",
                    "description", "sort_key", "id"}
PROPERTY_TYPES = {"person", "group", "cohort", "flag"}
BUCKETING = {"distinct_id", "device_id"}
RUNTIMES = {"all", "server", "client"}


def _bad(attr: str, detail: str, code: str = "invalid_input") -> InvalidInput:
    return InvalidInput(detail, code=code, attr=attr)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bool(data: dict, field: str, attr: str) -> bool:
    v = data[field]
    if not isinstance(v, bool):
        raise _bad(attr, f"`{field}` must be true or false, not {orjson.dumps(v).decode()}.")
    return v


def _percentage(v: Any, attr: str, *, nullable: bool = True) -> float | int | None:
    if v is None and nullable:
        return None
    if not _is_number(v) or not 0 <= v <= 100:
        raise _bad(attr, f"Rollout percentage must be a number from 0 to 100, not "
                         f"{orjson.dumps(v, default=str).decode()}.", "invalid_rollout")
    return v


def _group_type_index(v: Any, attr: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_GROUP_TYPE_INDEX:
        raise _bad(attr, f"Group type index must be an integer from 0 to {MAX_GROUP_TYPE_INDEX} or null.")
    return v


def clean_key(key: Any, attr: str = "key") -> str:
    if not isinstance(key, str) or not key:
        raise _bad(attr, "A flag needs a `key`: letters, numbers, `-` and `_`.", "required")
    if len(key) > MAX_KEY or not KEY_RE.match(key):
        raise _bad(attr, f"Flag key {key!r} may only contain letters, numbers, `-` and `_` "
                         f"(at most {MAX_KEY} characters).", "invalid_key")
    return key


class FilterContext:
    """What validation needs to know about the project: other flags and cohorts."""

    def __init__(self, flag_key_of: Callable[[Any], str | None], cohort_exists: Callable[[int], bool],
                 this_key: str | None = None) -> None:
        self.flag_key_of = flag_key_of
        self.cohort_exists = cohort_exists
        self.this_key = this_key


def clean_property(p: Any, attr: str, ctx: FilterContext) -> dict:
    if not isinstance(p, dict):
        raise _bad(attr, "A property filter must be an object like "
                         '{"key": "email", "operator": "icontains", "value": "@acme.com", "type": "person"}.')
    out = dict(p)
    kind = out.get("type") or "person"
    if kind not in PROPERTY_TYPES:
        raise _bad(f"{attr}.type", f"Unknown property filter type {kind!r}; use one of "
                                   f"{', '.join(sorted(PROPERTY_TYPES))}.")
    out["type"] = kind
    if kind == "cohort":
        op = out.get("operator") or "in"
        if op not in COHORT_OPERATORS:
            raise _bad(f"{attr}.operator", f"Cohort filters take the operator `in` or `not_in`, not {op!r}.",
                       "invalid_operator")
        try:
            cid = int(out.get("value"))
        except (TypeError, ValueError):
            raise _bad(f"{attr}.value", "A cohort filter's `value` is the cohort id.") from None
        if not ctx.cohort_exists(cid):
            raise _bad(f"{attr}.value", f"Cohort {cid} does not exist.", "not_found")
        out.update(key="id", value=cid, operator=op)
        return out
    if kind == "flag":
        op = out.get("operator") or "flag_evaluates_to"
        if op != "flag_evaluates_to":
            raise _bad(f"{attr}.operator", f"Flag dependencies take the operator `flag_evaluates_to`, not {op!r}.",
                       "invalid_operator")
        ref = ctx.flag_key_of(out.get("key"))
        if ref is None:
            raise _bad(f"{attr}.key", f"Flag dependency on {out.get('key')!r}: no such flag.", "not_found")
        if ref == ctx.this_key:
            raise _bad(f"{attr}.key", "A flag cannot depend on itself.", "circular_dependency")
        value = out.get("value")
        if not isinstance(value, (bool, str)) or value == "":
            raise _bad(f"{attr}.value", "A flag dependency's `value` is true, false or a variant key.")
        out.update(key=ref, operator=op)
        out.pop("dependency_chain", None)
        return out
    key = out.get("key")
    if not isinstance(key, str) or not key:
        raise _bad(f"{attr}.key", "A property filter needs a `key` (the property name).", "required")
    op = out.get("operator") or "exact"
    if op not in PROPERTY_OPERATORS:
        raise _bad(f"{attr}.operator", f"Unknown operator {op!r}; use one of {', '.join(sorted(PROPERTY_OPERATORS))}.",
                   "invalid_operator")
    out["operator"] = op
    if op not in VALUELESS_OPERATORS:
        try:
            check_filter_value(op, out.get("value"))
        except InvalidFilterValue as exc:
            raise _bad(f"{attr}.value", str(exc)) from None
    if kind == "group":
        if out.get("group_type_index") is None:
            raise _bad(f"{attr}.group_type_index", "A group property filter needs `group_type_index`.",
                       "required")
        _group_type_index(out.get("group_type_index"), f"{attr}.group_type_index")
    return out


def _clean_condition(c: Any, attr: str, ctx: FilterContext, variant_keys: set[str]) -> dict:
    if not isinstance(c, dict):
        raise _bad(attr, "A condition group must be an object with `properties` and `rollout_percentage`.")
    unknown = set(c) - CONDITION_FIELDS
    if unknown:
        raise _bad(f"{attr}.{sorted(unknown)[0]}", f"Unknown condition field {sorted(unknown)[0]!r}.",
                   "unknown_field")
    out = dict(c)
    props = out.get("properties") or []
    if not isinstance(props, list):
        raise _bad(f"{attr}.properties", "`properties` must be a list of property filters.")
    out["properties"] = [clean_property(p, f"{attr}.properties[{i}]", ctx) for i, p in enumerate(props)]
    out["rollout_percentage"] = _percentage(out.get("rollout_percentage"), f"{attr}.rollout_percentage")
    variant = out.get("variant")
    if variant is not None:
        if not isinstance(variant, str) or variant not in variant_keys:
            raise _bad(f"{attr}.variant", f"Variant override {variant!r} is not one of the flag's variants "
                                          f"({', '.join(sorted(variant_keys)) or 'none'}).", "invalid_variant")
    else:
        out["variant"] = None
    if "aggregation_group_type_index" in out:
        _group_type_index(out["aggregation_group_type_index"], f"{attr}.aggregation_group_type_index")
    return out


def _clean_payload(value: Any, attr: str) -> str:
    """Payloads are stored as JSON-encoded strings (as PostHog does)."""
    if isinstance(value, str):
        try:
            orjson.loads(value)
            return value
        except orjson.JSONDecodeError:
            return orjson.dumps(value).decode()
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        raise _bad(attr, "A payload must be JSON.") from None


def clean_filters(f: Any, ctx: FilterContext) -> dict:
    if not isinstance(f, dict):
        raise _bad("filters", "`filters` must be an object with `groups` (and optionally `multivariate`, `payloads`).")
    unknown = set(f) - FILTER_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise _bad(f"filters.{name}", f"Unknown filters field {name!r}.", "unknown_field")
    out: dict[str, Any] = {}
    mv = f.get("multivariate")
    variant_keys: list[str] = []
    if mv is not None:
        if not isinstance(mv, dict) or not isinstance(mv.get("variants"), list) or not mv["variants"]:
            raise _bad("filters.multivariate.variants", "`multivariate.variants` must be a non-empty list.")
        variants = []
        total = 0.0
        for i, v in enumerate(mv["variants"]):
            a = f"filters.multivariate.variants[{i}]"
            if not isinstance(v, dict):
                raise _bad(a, "A variant is an object with `key` and `rollout_percentage`.")
            key = clean_key(v.get("key"), f"{a}.key")
            if key in variant_keys:
                raise _bad(f"{a}.key", f"Variant key {key!r} appears twice.", "duplicate_variant")
            pct = _percentage(v.get("rollout_percentage"), f"{a}.rollout_percentage", nullable=False)
            name = v.get("name")
            if name is not None and not isinstance(name, str):
                raise _bad(f"{a}.name", "A variant's `name` must be a string.")
            variant_keys.append(key)
            total += pct
            variants.append({**v, "key": key, "name": name, "rollout_percentage": pct})
        if abs(total - 100) > 1e-9:
            raise _bad("filters.multivariate.variants",
                       f"Variant rollout percentages must add up to 100 (they add up to {total:g}).",
                       "invalid_variants")
        out["multivariate"] = {**mv, "variants": variants}
    else:
        out["multivariate"] = None
    groups = f.get("groups", [])
    if not isinstance(groups, list):
        raise _bad("filters.groups", "`filters.groups` must be a list of condition groups.")
    out["groups"] = [_clean_condition(c, f"filters.groups[{i}]", ctx, set(variant_keys))
                     for i, c in enumerate(groups)]
    payloads = f.get("payloads") or {}
    if not isinstance(payloads, dict):
        raise _bad("filters.payloads", "`payloads` must map `true` (or a variant key) to a JSON value.")
    allowed = set(variant_keys) | {"true"}
    clean_payloads = {}
    for k, v in payloads.items():
        if k not in allowed:
            raise _bad(f"filters.payloads.{k}", f"Payload key {k!r} is not `true` or one of the variants "
                                                f"({', '.join(variant_keys) or 'none'}).", "invalid_payload")
        if v is None:
            continue
        clean_payloads[k] = _clean_payload(v, f"filters.payloads.{k}")
    out["payloads"] = clean_payloads
    out["aggregation_group_type_index"] = _group_type_index(f.get("aggregation_group_type_index"),
                                                            "filters.aggregation_group_type_index")
    for name in ("feature_enrollment", "early_exit"):
        if name in f and f[name] is not None:
            out[name] = _bool(f, name, f"filters.{name}")
    if f.get("super_groups") is not None:
        sg = f["super_groups"]
        if not isinstance(sg, list):
            raise _bad("filters.super_groups", "`super_groups` must be a list of condition groups.")
        out["super_groups"] = [_clean_condition(c, f"filters.super_groups[{i}]", ctx, set(variant_keys))
                               for i, c in enumerate(sg)]
    if f.get("holdout") is not None:
        h = f["holdout"]
        if not isinstance(h, dict) or isinstance(h.get("id"), bool) or not isinstance(h.get("id"), int):
            raise _bad("filters.holdout", "`holdout` is {\"id\": <int>, \"exclusion_percentage\": 0-100}.")
        out["holdout"] = {**h, "exclusion_percentage": _percentage(
            h.get("exclusion_percentage"), "filters.holdout.exclusion_percentage", nullable=False)}
    if f.get("holdout_groups") is not None:
        hg = f["holdout_groups"]
        if not isinstance(hg, list):
            raise _bad("filters.holdout_groups", "`holdout_groups` must be a list.")
        for i, g in enumerate(hg):
            if not isinstance(g, dict):
                raise _bad(f"filters.holdout_groups[{i}]", "A holdout group must be an object.")
            _percentage(g.get("rollout_percentage"), f"filters.holdout_groups[{i}].rollout_percentage")
        out["holdout_groups"] = hg
    if f.get("bucketing_identifier") is not None:
        if f["bucketing_identifier"] not in BUCKETING:
            raise _bad("filters.bucketing_identifier", "`bucketing_identifier` is `distinct_id` or `device_id`.")
        out["bucketing_identifier"] = f["bucketing_identifier"]
    return out


def clean_flag(data: Any, *, existing: dict | None, ctx: FilterContext) -> tuple[str, dict]:
    """Validate a create (``existing`` None) or a partial update; return (key, stored document)."""
    if not isinstance(data, dict):
        raise _bad("body", "The request body must be a JSON object.")
    unknown = set(data) - FLAG_FIELDS - READ_ONLY_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise _bad(name, f"Unknown field {name!r}.", "unknown_field")
    doc = dict(existing["data"]) if existing else {
        "name": "", "active": True, "ensure_experience_continuity": False, "tags": [],
        "filters": {"groups": [{"properties": [], "rollout_percentage": 0}]},
        "evaluation_runtime": "all"}
    if existing is None or "key" in data:
        key = clean_key(data.get("key"))
    else:
        key = existing["key"]
    ctx.this_key = key
    if "name" in data:
        if not isinstance(data["name"], str):
            raise _bad("name", "`name` must be a string.")
        doc["name"] = data["name"]
    if "description" in data:
        if data["description"] is not None and not isinstance(data["description"], str):
            raise _bad("description", "`description` must be a string.")
        doc["description"] = data["description"]
    for name in ("active", "ensure_experience_continuity"):
        if name in data:
            doc[name] = _bool(data, name, name)
    if "tags" in data:
        tags = data["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _bad("tags", "`tags` must be a list of strings.")
        doc["tags"] = tags
    if "evaluation_runtime" in data:
        if data["evaluation_runtime"] not in RUNTIMES:
            raise _bad("evaluation_runtime", "`evaluation_runtime` is `all`, `server` or `client`.")
        doc["evaluation_runtime"] = data["evaluation_runtime"]
    if "bucketing_identifier" in data:
        if data["bucketing_identifier"] is not None and data["bucketing_identifier"] not in BUCKETING:
            raise _bad("bucketing_identifier", "`bucketing_identifier` is `distinct_id` or `device_id`.")
        doc["bucketing_identifier"] = data["bucketing_identifier"]
    if "filters" in data:
        doc["filters"] = clean_filters(data["filters"], ctx)
    elif "rollout_percentage" in data:  # legacy shorthand: one condition for everyone
        pct = _percentage(data["rollout_percentage"], "rollout_percentage")
        doc["filters"] = {**doc["filters"], "groups": [{"properties": [], "rollout_percentage": pct,
                                                        "variant": None}]}
    elif existing is None:
        doc["filters"] = clean_filters(doc["filters"], ctx)
    else:
        # re-check the stored filters against the current flags (a rename may break nothing else)
        doc["filters"] = clean_filters(doc["filters"], ctx)
    if doc["filters"].get("feature_enrollment") and doc["filters"].get("aggregation_group_type_index") is not None:
        raise _bad("filters.feature_enrollment", "Early access enrollment is per person: "
                                                 "it cannot be used on a group flag.")
    return key, doc
