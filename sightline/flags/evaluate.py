"""Feature-flag evaluation, exactly as PostHog's flags server does it (spec §5).

:func:`evaluate_flag` is a pure function of a flag definition (the PostHog-shaped dict served by
the local-evaluation endpoint) and an :class:`EvalContext`: who is asking, with which person and
group properties, cohorts, other flags (for dependencies) and clock. ``/flags``, ``/decide``, the
benchmarks and the tests all go through it.

Order (server ``flag_matching.rs``): disabled → early-access enrollment / super groups → holdout →
condition groups (first match wins; otherwise the highest-priority reason) → variant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from sightline.flags.cohorts import cohort_matches
from sightline.flags.properties import MISSING_RESULT, match_property

UTC = timezone.utc
LONG_SCALE = float(0xFFFFFFFFFFFFFFF)

# reason codes and their priority when no condition matched
SUPER_CONDITION = "super_condition_value"
HOLDOUT = "holdout_condition_value"
CONDITION_MATCH = "condition_match"
NO_GROUP_TYPE = "no_group_type"
OUT_OF_ROLLOUT = "out_of_rollout_bound"
NO_CONDITION_MATCH = "no_condition_match"
FLAG_DISABLED = "flag_disabled"
# The current server's scores (flag_match_reason.rs): a condition that really ran outranks one
# that was skipped for a missing group; on a tie the later condition wins.
PRIORITY = {SUPER_CONDITION: 6, HOLDOUT: 5, CONDITION_MATCH: 4, OUT_OF_ROLLOUT: 3,
            NO_CONDITION_MATCH: 2, NO_GROUP_TYPE: 1, FLAG_DISABLED: 0}
DESCRIPTIONS = {SUPER_CONDITION: "Super condition value", HOLDOUT: "Holdout condition value",
                NO_GROUP_TYPE: "No group type", OUT_OF_ROLLOUT: "Out of rollout bound",
                NO_CONDITION_MATCH: "No matching condition set", FLAG_DISABLED: "Flag is disabled"}


def hash_value(key: str, identifier: str, salt: str = "") -> float:
    """``sha1("<key>.<identifier><salt>")``'s first 15 hex digits as a float in [0, 1]."""
    if identifier == "":
        return 0.0
    digest = hashlib.sha1(f"{key}.{identifier}{salt}".encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / LONG_SCALE


def holdout_hash(identifier: str) -> float:
    """The holdout bucket: ``sha1("holdout-<identifier>")`` (the flag key is not part of it)."""
    digest = hashlib.sha1(f"holdout-{identifier}".encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / LONG_SCALE


def variant_table(filters: Mapping[str, Any]) -> list[tuple[float, float, str]]:
    out = []
    lo = 0.0
    for v in ((filters.get("multivariate") or {}).get("variants") or []):
        hi = lo + v["rollout_percentage"] / 100
        out.append((lo, hi, v["key"]))
        lo = hi
    return out


def matching_variant(flag: Mapping[str, Any], identifier: str) -> str | None:
    filters = flag.get("filters") or {}
    if not (filters.get("multivariate") or {}).get("variants"):
        return None
    h = hash_value(flag["key"], identifier, "variant")
    for lo, hi, key in variant_table(filters):
        if lo <= h < hi:
            return key
    return None


@dataclass
class EvalContext:
    """Everything evaluation may look at besides the flag itself.

    ``person_properties`` are the stored properties overridden by the request's;
    ``groups`` maps group type name → key, ``group_properties`` type name → properties and
    ``group_type_mapping`` index → type name. ``static_cohorts`` are the ids of the static
    cohorts the person is a member of. ``hash_key_overrides`` (flag key → identifier) come from
    experience continuity.
    """

    distinct_id: str
    person_properties: Mapping[str, Any] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
    group_properties: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    group_type_mapping: Mapping[int, str] = field(default_factory=dict)
    cohorts: Mapping[int, dict] = field(default_factory=dict)
    static_cohorts: frozenset[int] | set[int] = frozenset()
    flags_by_key: Mapping[str, dict] = field(default_factory=dict)
    device_id: str | None = None
    anon_distinct_id: str | None = None
    hash_key_overrides: Mapping[str, str] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # results of flags evaluated in this context (flag dependencies reuse them)
    cache: dict[str, "FlagResult"] = field(default_factory=dict)


@dataclass(slots=True)
class FlagResult:
    key: str
    enabled: bool
    variant: str | None
    reason: str
    condition_index: int | None
    payload: Any = None  # as stored: normally a JSON-encoded string
    id: int | None = None
    version: int | None = None
    name: str | None = None

    @property
    def value(self) -> bool | str:
        return self.variant if self.variant is not None else self.enabled

    @property
    def description(self) -> str:
        if self.reason == CONDITION_MATCH:
            return f"Matched condition set {(self.condition_index or 0) + 1}"
        return DESCRIPTIONS.get(self.reason, self.reason)

    def reason_json(self) -> dict:
        return {"code": self.reason, "condition_index": self.condition_index,
                "description": self.description}

    def detail(self) -> dict:
        """The ``FlagDetail`` of a ``/flags?v=2`` response."""
        return {"key": self.key, "enabled": self.enabled, "variant": self.variant,
                "reason": self.reason_json(),
                "metadata": {"id": self.id, "version": self.version, "description": self.name,
                             "payload": self.payload}}


def _result(flag: Mapping[str, Any], enabled: bool, variant: str | None, reason: str,
            index: int | None) -> FlagResult:
    payload = None
    if enabled:
        payloads = (flag.get("filters") or {}).get("payloads") or {}
        payload = payloads.get(variant if variant is not None else "true")
    return FlagResult(flag["key"], enabled, variant, reason, index, payload, flag.get("id"),
                      flag.get("version"), flag.get("name") or None)


def _in_rollout(key: str, identifier: str, pct: Any) -> bool:
    if pct is None:
        return True
    pct = float(pct)
    if pct >= 100:
        return True
    return hash_value(key, identifier) <= pct / 100


def _valid_variant(filters: Mapping[str, Any], variant: Any) -> bool:
    return isinstance(variant, str) and any(
        v.get("key") == variant for v in ((filters.get("multivariate") or {}).get("variants") or []))


def _dependency_matches(flt: Mapping[str, Any], ctx: EvalContext, stack: tuple[str, ...]) -> bool:
    if (flt.get("operator") or "flag_evaluates_to") != "flag_evaluates_to":
        return False
    ref, expected = flt.get("key"), flt.get("value")
    if ref is None or expected is None:
        return False
    ref = str(ref)
    dep = ctx.flags_by_key.get(ref)
    if dep is None and ref.isdigit():
        dep = next((f for f in ctx.flags_by_key.values() if f.get("id") == int(ref)), None)
    if dep is None or dep["key"] in stack:
        return False  # missing or circular: not a match
    result = ctx.cache.get(dep["key"])
    if result is None:
        result = evaluate_flag(dep, ctx, _stack=stack)
        ctx.cache[dep["key"]] = result
    actual = result.value
    if isinstance(actual, str) and actual:
        if isinstance(expected, bool):
            return expected
        return isinstance(expected, str) and actual == expected
    if isinstance(actual, bool) and isinstance(expected, bool):
        return actual == expected
    return False


def _filter_matches(flt: Any, props: Mapping[str, Any], ctx: EvalContext,
                    stack: tuple[str, ...]) -> bool:
    if not isinstance(flt, dict):
        return False
    kind = flt.get("type") or "person"
    if kind == "cohort":
        try:
            cid = int(flt.get("value"))
        except (TypeError, ValueError):
            return False
        matched = cohort_matches(cid, ctx.person_properties, ctx.cohorts, ctx.static_cohorts, ctx.now)
        return not matched if (flt.get("operator") or "in") == "not_in" else matched
    if kind == "flag":
        return _dependency_matches(flt, ctx, stack)
    if kind == "group" and flt.get("group_type_index") is not None:
        try:
            name = ctx.group_type_mapping.get(int(flt["group_type_index"]))
        except (TypeError, ValueError):
            name = None
        gprops = ctx.group_properties.get(name) if name is not None and name in ctx.groups else None
        if gprops is None:
            return MISSING_RESULT.get(flt.get("operator") or "exact", False)
        return match_property(flt, gprops, ctx.now)
    return match_property(flt, props, ctx.now)


def _group_context(index: Any, ctx: EvalContext) -> tuple[str, Mapping[str, Any]] | None:
    """(group key, group properties) for a group type index, if the request has that group."""
    try:
        name = ctx.group_type_mapping.get(int(index))
    except (TypeError, ValueError):
        return None
    key = ctx.groups.get(name) if name is not None else None
    if isinstance(key, bool) or not isinstance(key, (str, int, float)) or key == "":
        return None
    return str(key), ctx.group_properties.get(name) or {}


def _person_identifier(flag: Mapping[str, Any], ctx: EvalContext) -> str | None:
    filters = flag.get("filters") or {}
    if (flag.get("bucketing_identifier") or filters.get("bucketing_identifier")) == "device_id":
        return str(ctx.device_id) if ctx.device_id not in (None, "") else None
    if flag.get("ensure_experience_continuity"):
        override = ctx.hash_key_overrides.get(flag["key"])
        if override:
            return override
        if ctx.anon_distinct_id:
            return ctx.anon_distinct_id
    return ctx.distinct_id


def evaluate_flag(flag: Mapping[str, Any], ctx: EvalContext, *, _stack: tuple[str, ...] = ()) -> FlagResult:
    """Evaluate one flag for one context; see the module docstring for the order of rules."""
    if not flag.get("active", True) or flag.get("deleted"):
        return _result(flag, False, None, FLAG_DISABLED, None)
    key = flag["key"]
    stack = _stack + (key,)
    filters = flag.get("filters") or {}
    agg = filters.get("aggregation_group_type_index")
    person_ident = _person_identifier(flag, ctx)

    # early access: enrollment (person-level, even on group flags) or legacy super groups
    if filters.get("feature_enrollment") is True:
        enrolled = ctx.person_properties.get(f"$feature_enrollment/{key}", _ABSENT)
        if enrolled is not _ABSENT:
            return _result(flag, enrolled is True or enrolled == "true", None, SUPER_CONDITION, 0)
    else:
        super_groups = filters.get("super_groups") or []
        if super_groups and isinstance(super_groups[0], dict):
            sg = super_groups[0]
            sprops = sg.get("properties") or []
            if sprops and any(isinstance(p, dict) and p.get("key") in ctx.person_properties
                              for p in sprops):
                on = (all(_filter_matches(p, ctx.person_properties, ctx, stack) for p in sprops)
                      and _in_rollout(key, person_ident or "", sg.get("rollout_percentage")))
                return _result(flag, on, None, SUPER_CONDITION, 0)

    # holdouts (bucketed on the person identifier; the flag key is not part of the hash)
    holdout = filters.get("holdout")
    if isinstance(holdout, dict) and holdout.get("id") is not None \
            and holdout.get("exclusion_percentage") is not None:
        pct = min(max(float(holdout["exclusion_percentage"]), 0.0), 100.0)
        if pct >= 100 or holdout_hash(person_ident or "") <= pct / 100:
            return _result(flag, True, f"holdout-{holdout['id']}", HOLDOUT, None)
    else:
        holdout_groups = filters.get("holdout_groups") or []
        if holdout_groups and isinstance(holdout_groups[0], dict):
            hg = holdout_groups[0]
            pct = hg.get("rollout_percentage")
            if pct is not None and (float(pct) >= 100
                                    or holdout_hash(person_ident or "") <= float(pct) / 100):
                return _result(flag, True, hg.get("variant") or "holdout", HOLDOUT, None)

    # release conditions: the first match wins, otherwise the highest-priority reason
    best_reason, best_index = NO_GROUP_TYPE, None
    early_exit = bool(filters.get("early_exit"))
    for index, cond in enumerate(filters.get("groups") or []):
        if not isinstance(cond, dict):
            continue
        cagg = cond.get("aggregation_group_type_index", agg) if "aggregation_group_type_index" in cond else agg
        if cagg is None:
            ident, props = person_ident, ctx.person_properties
            reason = OUT_OF_ROLLOUT if ident is None else None  # device_id bucketing, no device id
        else:
            group = _group_context(cagg, ctx)
            if group is None:
                ident, props, reason = None, None, NO_GROUP_TYPE
            else:
                (ident, props), reason = group, None
        if reason is None:
            if not all(_filter_matches(p, props, ctx, stack) for p in (cond.get("properties") or [])):
                reason = NO_CONDITION_MATCH
            elif not _in_rollout(key, ident, cond.get("rollout_percentage")):
                reason = OUT_OF_ROLLOUT
                if early_exit:
                    return _result(flag, False, None, OUT_OF_ROLLOUT, index)
            else:
                override = cond.get("variant")
                variant = override if _valid_variant(filters, override) else matching_variant(flag, ident)
                return _result(flag, True, variant, CONDITION_MATCH, index)
        if PRIORITY[reason] >= PRIORITY[best_reason]:
            best_reason, best_index = reason, index
    return _result(flag, False, None, best_reason, best_index)


_ABSENT = object()


def evaluate_all(flags: list[Mapping[str, Any]], ctx: EvalContext,
                 keys: set[str] | None = None) -> tuple[dict[str, FlagResult], bool]:
    """Evaluate ``flags`` (only ``keys`` if given). A flag that raises is left out and the second
    value (``errorsWhileComputingFlags``) is True; the others are unaffected."""
    out: dict[str, FlagResult] = {}
    errors = False
    for flag in flags:
        key = flag["key"]
        if keys is not None and key not in keys:
            continue
        try:
            result = ctx.cache.get(key)
            if result is None:
                result = evaluate_flag(flag, ctx)
                ctx.cache[key] = result
            out[key] = result
        except Exception:  # noqa: BLE001 - one broken definition must not break the others
            errors = True
    return out, errors
