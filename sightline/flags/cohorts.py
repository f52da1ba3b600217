"""Cohort membership for flag evaluation.

A cohort is ``{id, name, filters, is_static}``. Static cohorts list their members (distinct ids) in
the metadata store; the caller resolves those into ``static_member_of`` (the ids of the static
cohorts the person belongs to). Dynamic cohorts are property trees:

    filters = {"properties": {"type": "AND"|"OR", "values": [group | filter, ...]}}

where a leaf is a person property filter (``negation`` inverts it) or ``{"type": "cohort",
"value": <id>}`` (a nested cohort). :func:`cohort_matches` is the single place that decides
whether a person is in a cohort; behavioural conditions (``type: "behavioral"``) are not
evaluated here yet and never match.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from sightline.flags.properties import match_property

EMPTY_GROUP: dict = {"type": "AND", "values": []}


def cohort_property_group(filters: Any) -> dict:
    """The AND/OR tree of a cohort's ``filters`` (also accepts the legacy ``groups`` shape)."""
    if not isinstance(filters, dict):
        return EMPTY_GROUP
    props = filters.get("properties")
    if isinstance(props, dict) and props.get("type") in ("AND", "OR"):
        return props
    if filters.get("type") in ("AND", "OR") and isinstance(filters.get("values"), list):
        return filters
    groups = filters.get("groups")
    if isinstance(groups, list):  # legacy: OR of AND groups of property filters
        return {"type": "OR", "values": [{"type": "AND", "values": list(g.get("properties") or [])}
                                         for g in groups if isinstance(g, dict)]}
    return EMPTY_GROUP


def referenced_cohort_ids(group: Any) -> set[int]:
    """Every cohort id a property tree (or a list of filters) refers to, not recursively."""
    out: set[int] = set()
    stack = [group]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("type") == "cohort":
                try:
                    out.add(int(node.get("value")))
                except (TypeError, ValueError):
                    pass
            elif "values" in node:
                stack.append(node.get("values"))
    return out


def _is_group(node: dict) -> bool:
    return "values" in node or node.get("type") in ("AND", "OR")


def _match_group(group: dict, person_properties: Mapping[str, Any], cohorts: Mapping[int, dict],
                 static_member_of: frozenset[int] | set[int], now: datetime,
                 seen: tuple[int, ...]) -> bool:
    values = group.get("values") or []
    if not values:
        return True
    is_and = group.get("type", "AND") != "OR"
    for node in values:
        if not isinstance(node, dict):
            matched = False
        elif _is_group(node) and node.get("type") != "cohort":
            matched = _match_group(node, person_properties, cohorts, static_member_of, now, seen)
        else:
            kind = node.get("type") or "person"
            if kind == "cohort":
                try:
                    cid = int(node.get("value"))
                except (TypeError, ValueError):
                    cid = None
                matched = cid is not None and cohort_matches(
                    cid, person_properties, cohorts, static_member_of, now, seen)
                if (node.get("operator") or "in") == "not_in":
                    matched = not matched
            elif kind == "person":
                matched = match_property(node, person_properties, now)
            else:
                matched = False  # behavioural and other condition kinds: not evaluated here
            if node.get("negation"):
                matched = not matched
        if is_and and not matched:
            return False
        if not is_and and matched:
            return True
    return is_and


def cohort_matches(cohort_id: int, person_properties: Mapping[str, Any], cohorts: Mapping[int, dict],
                   static_member_of: frozenset[int] | set[int], now: datetime,
                   seen: tuple[int, ...] = ()) -> bool:
    """Is the person in cohort ``cohort_id``? Unknown, deleted or cyclic cohorts never match."""
    cohort = cohorts.get(cohort_id)
    if cohort is None or cohort.get("deleted") or cohort_id in seen:
        return False
    if cohort.get("is_static") or has_behavioral(cohort):
        # behavioural cohorts are computed over events by the query engine (see
        # FlagService.computed_members) and arrive here like static membership
        return cohort_id in static_member_of
    group = cohort_property_group(cohort.get("filters"))
    return _match_group(group, person_properties, cohorts, static_member_of, now, seen + (cohort_id,))


def has_behavioral(cohort: dict) -> bool:
    """Does the cohort's tree test behaviour (events), not only person properties?"""
    stack = [cohort_property_group(cohort.get("filters"))]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("type") == "behavioral":
                return True
            if "values" in node:
                stack.append(node.get("values"))
    return False
