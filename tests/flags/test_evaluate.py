"""Evaluation semantics (spec §5): operators, semver, dates, missing properties, cohorts, flag
dependencies, holdouts, early access, device-id bucketing, groups, reasons."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sightline.flags.cohorts import cohort_matches
from sightline.flags.evaluate import EvalContext, evaluate_all, evaluate_flag, hash_value
from sightline.flags.properties import match_property

UTC = timezone.utc
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


def m(operator, value, prop, key="k"):
    flt = {"key": key, "operator": operator, "value": value}
    props = {} if prop is _MISSING else {key: prop}
    return match_property(flt, props, NOW)


_MISSING = object()

OPERATOR_CASES = [
    # exact / is_not: case-insensitive strings, JSON-style numbers, lists, booleans
    ("exact", "Value", "value", True), ("exact", "value", "other", False),
    ("exact", ["a", "B"], "b", True), ("exact", ["a", "b"], "c", False),
    ("exact", 5, "5", True), ("exact", "5", 5, True), ("exact", 1.5, "1.5", True),
    ("exact", True, "true", True), ("exact", "true", True, True), ("exact", "false", False, True),
    ("exact", True, False, False), ("exact", ["true"], True, True), ("exact", "TRUE", "true", True),
    ("is_not", "value", "VALUE", False), ("is_not", "value", "other", True),
    ("is_not", ["a", "b"], "c", True), ("is_not", ["a", "b"], "A", False),
    # text operators
    ("icontains", "ACME", "me@acme.com", True), ("icontains", "x", "me@acme.com", False),
    ("not_icontains", "acme", "me@ACME.com", False), ("not_icontains", "x", "abc", True),
    ("starts_with", "Me", "me@acme.com", True), ("ends_with", ".COM", "me@acme.com", True),
    ("not_starts_with", "me", "me@x", False), ("not_ends_with", "x", "abc", True),
    ("icontains", "1", 123, True),
    # regex (search semantics; invalid pattern never matches)
    ("regex", r"^\d+$", "123", True), ("regex", r"^\d+$", "12a", False), ("regex", "acme", "x@acme.io", True),
    ("not_regex", r"^\d+$", "12a", True), ("not_regex", r"^\d+$", "123", False),
    ("regex", "[unclosed", "[unclosed", False), ("not_regex", "[unclosed", "anything", False),
    # numeric: both sides as numbers, numeric strings allowed, anything else no match
    ("gt", 5, 6, True), ("gt", 5, 5, False), ("gte", 5, 5, True), ("lt", "10", "9", True),
    ("lt", 10, "9.5", True), ("lte", 1, 1.0, True), ("gt", 5, "abc", False), ("gt", "abc", 6, False),
    ("gt", 5, True, False), ("gt", 5, None, False), ("lt", 100, "1e1", True),
    # is_set / is_not_set: presence only
    ("is_set", None, "x", True), ("is_set", None, None, True), ("is_not_set", None, "x", False),
    # semver
    ("semver_eq", "1.2.3", "v1.2.3", True), ("semver_eq", "1.2", "1.2.0", True),
    ("semver_eq", "1.2.3", "1.2.3-beta+build", True), ("semver_neq", "1.2.3", "1.2.4", True),
    ("semver_gt", "1.2.3", "1.10.0", True), ("semver_gt", "1.2.3", "1.2.3", False),
    ("semver_gte", "1.2.3", "1.2.3", True), ("semver_lt", "2.0.0", "1.99.99", True),
    ("semver_lte", "2.0.0", "2.0.1", False), ("semver_eq", "1.2.3", "01.2.3", False),
    ("semver_gt", "1.0.0", "not-a-version", False),
    ("semver_tilde", "1.2.3", "1.2.9", True), ("semver_tilde", "1.2.3", "1.3.0", False),
    ("semver_tilde", "1.2.3", "1.2.2", False),
    ("semver_caret", "1.2.3", "1.9.0", True), ("semver_caret", "1.2.3", "2.0.0", False),
    ("semver_caret", "0.2.3", "0.2.9", True), ("semver_caret", "0.2.3", "0.3.0", False),
    ("semver_caret", "0.0.3", "0.0.3", True), ("semver_caret", "0.0.3", "0.0.4", False),
    ("semver_wildcard", "1.*", "1.99.0", True), ("semver_wildcard", "1.*", "2.0.0", False),
    ("semver_wildcard", "1.2.*", "1.2.7", True), ("semver_wildcard", "1.2.*", "1.3.0", False),
    # dates: absolute, relative (measured back from NOW), person value in unix seconds
    ("is_date_before", "2026-01-01", "2025-12-31T23:59:59Z", True),
    ("is_date_before", "2026-01-01", "2026-01-02", False),
    ("is_date_after", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01+00:00", True),
    ("is_date_after", "-7d", (NOW - timedelta(days=6)).isoformat(), True),
    ("is_date_after", "-7d", (NOW - timedelta(days=8)).isoformat(), False),
    ("is_date_before", "-1m", "2026-02-27T12:00:00Z", True),   # one calendar month before Mar 31 → Feb 28
    ("is_date_before", "-1m", "2026-02-28T13:00:00Z", False),
    ("is_date_before", "1y", "2025-03-30T00:00:00Z", True),
    ("is_date_after", "-12h", (NOW - timedelta(hours=11)).isoformat(), True),
    ("is_date_after", "-2w", (NOW - timedelta(days=15)).isoformat(), False),
    ("is_date_before", "2026-01-01", 1735689600, True),       # 2025-01-01 as unix seconds
    ("is_date_after", "2026-01-01", "1767312000", True),      # 2026-01-02 as a numeric string
    ("is_date_exact", "2026-01-01", "2026-01-01T15:00:00Z", True),
    ("is_date_exact", "2026-01-01", "2026-01-02T00:00:00Z", False),
    ("is_date_before", "2026-01-01", "not a date", False),
    ("is_date_before", "-10000d", "2020-01-01", False),      # relative number too large
]


@pytest.mark.parametrize("operator,value,prop,expected", OPERATOR_CASES)
def test_operator(operator, value, prop, expected):
    assert m(operator, value, prop) is expected


# the server's answer when the property is missing altogether (spec §5.3)
MISSING_CASES = [("exact", "x", False), ("is_not", "x", True), ("icontains", "x", False),
                 ("not_icontains", "x", True), ("regex", "x", False), ("not_regex", "x", True),
                 ("starts_with", "x", False), ("not_starts_with", "x", True),
                 ("ends_with", "x", False), ("not_ends_with", "x", True),
                 ("gt", 1, False), ("gte", 1, False), ("lt", 1, False), ("lte", 1, False),
                 ("is_date_before", "2026-01-01", False), ("is_date_after", "-7d", False),
                 ("semver_gt", "1.0.0", False), ("is_set", None, False), ("is_not_set", None, True)]


@pytest.mark.parametrize("operator,value,expected", MISSING_CASES)
def test_missing_property_rules(operator, value, expected):
    assert m(operator, value, _MISSING) is expected


def flag(key="f", groups=None, **filters):
    return {"id": 1, "key": key, "active": True, "version": 1,
            "filters": {"groups": groups if groups is not None else [{"properties": [], "rollout_percentage": 100}],
                        **filters}}


def test_conditions_first_match_and_reasons():
    f = flag(groups=[
        {"properties": [{"key": "plan", "value": "pro", "type": "person"}], "rollout_percentage": 100},
        {"properties": [{"key": "email", "operator": "icontains", "value": "@acme.com"}], "rollout_percentage": 0},
        {"properties": [], "rollout_percentage": 100, "variant": None},
    ])
    r = evaluate_flag(f, EvalContext("u", person_properties={"plan": "PRO"}))
    assert (r.enabled, r.reason, r.condition_index, r.description) == (True, "condition_match", 0,
                                                                        "Matched condition set 1")
    r = evaluate_flag(f, EvalContext("u", person_properties={"plan": "free"}))
    assert (r.reason, r.condition_index) == ("condition_match", 2)
    f["filters"]["groups"].pop()
    r = evaluate_flag(f, EvalContext("u", person_properties={"email": "a@acme.com"}))
    assert (r.enabled, r.reason, r.condition_index) == (False, "out_of_rollout_bound", 1)
    r = evaluate_flag(f, EvalContext("u"))
    assert (r.enabled, r.reason, r.condition_index, r.description) == (
        False, "no_condition_match", 1, "No matching condition set")
    f["active"] = False
    r = evaluate_flag(f, EvalContext("u", person_properties={"plan": "pro"}))
    assert (r.enabled, r.reason) == (False, "flag_disabled")


def test_null_rollout_matches_and_early_exit():
    f = flag(groups=[{"properties": [{"key": "a", "value": "1"}], "rollout_percentage": 0},
                     {"properties": [], "rollout_percentage": None}])
    assert evaluate_flag(f, EvalContext("u", person_properties={"a": 1})).reason == "condition_match"
    f["filters"]["early_exit"] = True
    r = evaluate_flag(f, EvalContext("u", person_properties={"a": 1}))
    assert (r.enabled, r.reason, r.condition_index) == (False, "out_of_rollout_bound", 0)


def test_variant_override_and_payloads():
    f = flag(groups=[{"properties": [{"key": "beta", "value": True}], "rollout_percentage": 100, "variant": "test"},
                     {"properties": [], "rollout_percentage": 100, "variant": "nope"}],
             multivariate={"variants": [{"key": "control", "rollout_percentage": 50},
                                        {"key": "test", "rollout_percentage": 50}]},
             payloads={"test": '{"color":"red"}', "control": '"blue"'})
    r = evaluate_flag(f, EvalContext("u", person_properties={"beta": "true"}))
    assert (r.variant, r.payload) == ("test", '{"color":"red"}')
    # an invalid override falls back to the hash
    r = evaluate_flag(f, EvalContext("u"))
    expected = "control" if hash_value("f", "u", "variant") < 0.5 else "test"
    assert r.variant == expected and r.condition_index == 1
    d = r.detail()
    assert d["metadata"]["payload"] == f["filters"]["payloads"][expected]
    assert d["reason"] == {"code": "condition_match", "condition_index": 1,
                           "description": "Matched condition set 2"}


def test_group_flags_and_mixed_targeting():
    f = flag(groups=[{"properties": [{"key": "size", "operator": "gt", "value": 100, "type": "group",
                                      "group_type_index": 0}], "rollout_percentage": 100}],
             aggregation_group_type_index=0)
    mapping = {0: "company", 1: "team"}
    r = evaluate_flag(f, EvalContext("u", group_type_mapping=mapping))
    assert (r.enabled, r.reason) == (False, "no_group_type")
    ctx = EvalContext("u", groups={"company": "acme"}, group_properties={"company": {"size": 500}},
                      group_type_mapping=mapping)
    assert evaluate_flag(f, ctx).enabled
    ctx = EvalContext("u", groups={"company": "acme"}, group_properties={"company": {"size": 5}},
                      group_type_mapping=mapping)
    assert evaluate_flag(f, ctx).reason == "no_condition_match"
    # mixed: a person condition and a team condition on one flag
    mixed = flag(groups=[{"properties": [], "rollout_percentage": 100, "aggregation_group_type_index": 1},
                         {"properties": [{"key": "email", "operator": "is_set"}], "rollout_percentage": 100,
                          "aggregation_group_type_index": None}])
    r = evaluate_flag(mixed, EvalContext("u", group_type_mapping=mapping))
    assert (r.enabled, r.reason, r.condition_index) == (False, "no_condition_match", 1)
    r = evaluate_flag(mixed, EvalContext("u", groups={"team": 7}, group_type_mapping=mapping))
    assert (r.enabled, r.condition_index) == (True, 0)
    r = evaluate_flag(mixed, EvalContext("u", person_properties={"email": "x"}, group_type_mapping=mapping))
    assert (r.enabled, r.condition_index) == (True, 1)


def test_cohorts_property_trees_static_nested_and_negation():
    cohorts = {
        1: {"id": 1, "is_static": False, "filters": {"properties": {"type": "OR", "values": [
            {"type": "AND", "values": [{"key": "plan", "value": "pro", "type": "person"},
                                       {"key": "country", "value": "FR", "negation": True}]},
            {"type": "AND", "values": [{"key": "email", "operator": "icontains", "value": "@acme.com"}]}]}}},
        2: {"id": 2, "is_static": True, "filters": {}},
        3: {"id": 3, "is_static": False, "filters": {"properties": {"type": "AND", "values": [
            {"type": "cohort", "value": 1, "operator": "in"}, {"key": "age", "operator": "gte", "value": 18}]}}},
        4: {"id": 4, "is_static": False, "filters": {"properties": {"type": "AND", "values": [
            {"type": "cohort", "value": 4}]}}},  # refers to itself
    }

    def inside(cid, props, static=frozenset()):
        return cohort_matches(cid, props, cohorts, static, NOW)

    assert inside(1, {"plan": "pro", "country": "DE"})
    assert not inside(1, {"plan": "pro", "country": "FR"})
    assert inside(1, {"plan": "pro"})  # negated leaf with the property missing: exact → false → true
    assert inside(1, {"email": "x@ACME.com"})
    assert not inside(1, {})
    assert inside(2, {}, frozenset({2})) and not inside(2, {"plan": "pro"})
    assert inside(3, {"plan": "pro", "age": 30}) and not inside(3, {"plan": "pro", "age": 3})
    assert not inside(4, {}) and not inside(99, {})
    f = flag(groups=[{"properties": [{"type": "cohort", "key": "id", "value": 3}], "rollout_percentage": 100}])
    assert evaluate_flag(f, EvalContext("u", person_properties={"email": "a@acme.com", "age": 20},
                                        cohorts=cohorts)).enabled
    f["filters"]["groups"][0]["properties"][0]["operator"] = "not_in"
    assert evaluate_flag(f, EvalContext("u", person_properties={}, cohorts=cohorts)).enabled


def test_flag_dependencies():
    base = flag("base", groups=[{"properties": [{"key": "plan", "value": "pro"}], "rollout_percentage": 100}])
    mv = flag("mv", multivariate={"variants": [{"key": "a", "rollout_percentage": 100}]})
    dep_true = flag("needs-base", groups=[{"properties": [
        {"type": "flag", "key": "base", "operator": "flag_evaluates_to", "value": True}], "rollout_percentage": 100}])
    dep_false = flag("needs-not-base", groups=[{"properties": [
        {"type": "flag", "key": "base", "operator": "flag_evaluates_to", "value": False}], "rollout_percentage": 100}])
    dep_variant = flag("needs-a", groups=[{"properties": [
        {"type": "flag", "key": "mv", "operator": "flag_evaluates_to", "value": "a"}], "rollout_percentage": 100}])
    dep_bad_op = flag("bad-op", groups=[{"properties": [
        {"type": "flag", "key": "base", "operator": "exact", "value": True}], "rollout_percentage": 100}])
    cyc1 = flag("c1", groups=[{"properties": [{"type": "flag", "key": "c2", "operator": "flag_evaluates_to",
                                               "value": True}], "rollout_percentage": 100}])
    cyc2 = flag("c2", groups=[{"properties": [{"type": "flag", "key": "c1", "operator": "flag_evaluates_to",
                                               "value": True}], "rollout_percentage": 100}])
    flags = [base, mv, dep_true, dep_false, dep_variant, dep_bad_op, cyc1, cyc2]
    by_key = {f["key"]: f for f in flags}
    res, errors = evaluate_all(flags, EvalContext("u", person_properties={"plan": "pro"}, flags_by_key=by_key))
    assert not errors
    assert res["needs-base"].enabled and not res["needs-not-base"].enabled
    assert res["needs-a"].enabled and not res["bad-op"].enabled
    assert not res["c1"].enabled and not res["c2"].enabled
    res, _ = evaluate_all(flags, EvalContext("u", person_properties={"plan": "free"}, flags_by_key=by_key))
    assert not res["needs-base"].enabled and res["needs-not-base"].enabled


def test_enrollment_super_groups_and_holdout_order():
    f = flag(groups=[{"properties": [], "rollout_percentage": 0}], feature_enrollment=True)
    r = evaluate_flag(f, EvalContext("u", person_properties={"$feature_enrollment/f": True}))
    assert (r.enabled, r.reason, r.condition_index) == (True, "super_condition_value", 0)
    r = evaluate_flag(f, EvalContext("u", person_properties={"$feature_enrollment/f": "false"}))
    assert (r.enabled, r.reason) == (False, "super_condition_value")
    assert evaluate_flag(f, EvalContext("u")).reason == "out_of_rollout_bound"
    legacy = flag(groups=[{"properties": [], "rollout_percentage": 0}],
                  super_groups=[{"properties": [{"key": "$feature_enrollment/f", "value": ["true"]}],
                                 "rollout_percentage": 100}])
    assert evaluate_flag(legacy, EvalContext("u", person_properties={"$feature_enrollment/f": True})).enabled
    assert evaluate_flag(legacy, EvalContext("u")).reason == "out_of_rollout_bound"
    # an enrolled person is not held out; a held-out person never reaches the conditions
    held = flag(holdout={"id": 3, "exclusion_percentage": 100}, feature_enrollment=True)
    assert evaluate_flag(held, EvalContext("u", person_properties={"$feature_enrollment/f": True})).variant is None
    r = evaluate_flag(held, EvalContext("u"))
    assert (r.variant, r.reason, r.condition_index) == ("holdout-3", "holdout_condition_value", None)


def test_device_id_bucketing_and_experience_continuity():
    f = flag(groups=[{"properties": [], "rollout_percentage": 50}], bucketing_identifier="device_id")
    r = evaluate_flag(f, EvalContext("user"))
    assert (r.enabled, r.reason) == (False, "out_of_rollout_bound")
    on = [d for d in (f"dev-{i}" for i in range(40)) if hash_value("f", d) <= 0.5]
    assert all(evaluate_flag(f, EvalContext(f"other-{i}", device_id=d)).enabled for i, d in enumerate(on))
    eec = {**flag(groups=[{"properties": [], "rollout_percentage": 50}]), "ensure_experience_continuity": True}
    anon = next(f"anon-{i}" for i in range(100) if hash_value("f", f"anon-{i}") <= 0.5)
    user = next(f"user-{i}" for i in range(100) if hash_value("f", f"user-{i}") > 0.5)
    assert evaluate_flag(eec, EvalContext(user, anon_distinct_id=anon)).enabled
    assert evaluate_flag(eec, EvalContext(user, hash_key_overrides={"f": anon})).enabled
    assert not evaluate_flag(eec, EvalContext(user)).enabled


def test_a_failing_flag_does_not_break_the_others():
    good = flag("good")
    broken = {"id": 2, "key": "broken", "active": True,
              "filters": {"groups": [{"properties": [], "rollout_percentage": "abc"}]}}
    res, errors = evaluate_all([broken, good], EvalContext("u"))
    assert errors and "broken" not in res and res["good"].enabled
