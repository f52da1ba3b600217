"""The real posthog-python SDK: its LOCAL evaluation (definitions polled from our
`/flags/definitions` with a secret key) and our server's REMOTE evaluation (`/flags`) agree on every
flag, variant and payload for thousands of distinct ids."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from posthog import Posthog

N_IDS = 2000
PLANS = ["free", "pro", "enterprise", "Pro"]
FLAGS = [
    {"key": "rollout-30", "filters": {"groups": [{"properties": [], "rollout_percentage": 30}],
                                      "payloads": {"true": {"banner": "hello"}}}},
    {"key": "three-way", "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "multivariate": {"variants": [{"key": "control", "rollout_percentage": 34},
                                      {"key": "red", "rollout_percentage": 33},
                                      {"key": "blue", "rollout_percentage": 33}]},
        "payloads": {"control": {"c": 0}, "red": {"c": "#f00"}, "blue": [1, 2, 3]}}},
    {"key": "multivariate-55", "filters": {
        "groups": [{"properties": [], "rollout_percentage": 55}],
        "multivariate": {"variants": [{"key": "first", "rollout_percentage": 50},
                                      {"key": "second", "rollout_percentage": 20},
                                      {"key": "third", "rollout_percentage": 20},
                                      {"key": "fourth", "rollout_percentage": 5},
                                      {"key": "fifth", "rollout_percentage": 5}]}}},
    {"key": "pro-or-acme", "filters": {
        "groups": [{"properties": [{"key": "plan", "value": ["pro", "enterprise"], "type": "person"}],
                    "rollout_percentage": 100},
                   {"properties": [{"key": "email", "operator": "icontains", "value": "@ACME.com"}],
                    "rollout_percentage": 50, "variant": "beta"}],
        "multivariate": {"variants": [{"key": "stable", "rollout_percentage": 80},
                                      {"key": "beta", "rollout_percentage": 20}]},
        "payloads": {"beta": {"new_ui": True}, "stable": "plain string"}}},
    {"key": "heavy-users", "filters": {"groups": [
        {"properties": [{"key": "sessions", "operator": "gt", "value": 10},
                        {"key": "country", "operator": "is_not", "value": ["FR", "DE"]}],
         "rollout_percentage": 70}]}},
    {"key": "new-app", "filters": {"groups": [
        {"properties": [{"key": "app_version", "operator": "semver_gte", "value": "2.3.0"}],
         "rollout_percentage": 100},
        {"properties": [{"key": "app_version", "operator": "semver_tilde", "value": "1.4.0"}],
         "rollout_percentage": 40}], "payloads": {"true": 42}}},
    {"key": "early-signups", "filters": {"groups": [
        {"properties": [{"key": "signed_up_at", "operator": "is_date_before", "value": "2025-06-01"}],
         "rollout_percentage": 100}]}},
    {"key": "no-gmail", "filters": {"groups": [
        {"properties": [{"key": "email", "operator": "not_icontains", "value": "gmail"},
                        {"key": "email", "operator": "regex", "value": r"^[a-z]+\d*@"}],
         "rollout_percentage": 85}]}},
    {"key": "switched-off", "active": False, "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}},
    {"key": "company-rollout", "filters": {"aggregation_group_type_index": 0, "groups": [
        {"properties": [{"key": "tier", "value": "gold", "type": "group", "group_type_index": 0}],
         "rollout_percentage": 100},
        {"properties": [], "rollout_percentage": 40}]}},
    {"key": "needs-rollout-30", "filters": {"groups": [
        {"properties": [{"type": "flag", "key": "rollout-30", "operator": "flag_evaluates_to", "value": True}],
         "rollout_percentage": 60}]}},
]


def _person(i: int) -> tuple[str, dict, dict, dict]:
    rnd = random.Random(i)
    user = rnd.choice(["ann", "bob", "carla", "dmitri", "eve"]) + str(rnd.randint(0, 99))
    domain = rnd.choice(["acme.com", "gmail.com", "example.org", "ACME.COM"])
    props = {"plan": rnd.choice(PLANS), "email": f"{user}@{domain}", "sessions": rnd.randint(0, 30),
             "country": rnd.choice(["US", "FR", "DE", "IN"]),
             "app_version": f"{rnd.randint(1, 3)}.{rnd.randint(0, 5)}.{rnd.randint(0, 9)}",
             "signed_up_at": f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T10:00:00Z"}
    company = f"company-{rnd.randint(0, 60)}"
    groups = {"company": company}
    group_props = {"company": {"tier": rnd.choice(["gold", "silver"])}}
    return f"user-{i}", props, groups, group_props


@pytest.fixture(scope="module")
def flagged_server(server):
    # a group type must exist for group flags: `company` gets index 0
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": [
        {"event": "$groupidentify", "distinct_id": "setup",
         "properties": {"$group_type": "company", "$group_key": "company-0", "$group_set": {"tier": "gold"}}}]})
    assert r.status_code == 200
    with server.api() as c:
        for f in FLAGS:
            r = c.post("/api/projects/@current/feature_flags/", json=f)
            assert r.status_code == 201, r.text
    return server


@pytest.mark.filterwarnings("ignore:`personal_api_key` is deprecated")
def test_local_and_remote_evaluation_agree(flagged_server):
    srv = flagged_server
    local = Posthog(srv.token, host=srv.url, personal_api_key=srv.api_key, poll_interval=300,
                    feature_flags_request_timeout_seconds=10)
    remote = Posthog(srv.token, host=srv.url, feature_flags_request_timeout_seconds=10)
    try:
        local.load_feature_flags()
        assert {f["key"] for f in local.feature_flags} == {f["key"] for f in FLAGS}
        people = [_person(i) for i in range(N_IDS)]

        def both(person):
            did, props, groups, gprops = person
            kw = dict(person_properties=props, groups=groups, group_properties=gprops)
            lo = local.get_all_flags_and_payloads(did, only_evaluate_locally=True, **kw)
            re = remote.get_all_flags_and_payloads(did, **kw)
            return did, lo, re

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(both, people))
    finally:
        local.shutdown()
        remote.shutdown()

    disagreements = []
    seen_values: dict[str, set] = {}
    for did, lo, re in results:
        assert set(lo["featureFlags"]) == {f["key"] for f in FLAGS}, (did, lo)
        for key, value in lo["featureFlags"].items():
            seen_values.setdefault(key, set()).add(value)
            if re["featureFlags"].get(key) != value:
                disagreements.append((did, key, value, re["featureFlags"].get(key)))
        if (lo["featureFlagPayloads"] or {}) != (re["featureFlagPayloads"] or {}):
            disagreements.append((did, "payloads", lo["featureFlagPayloads"], re["featureFlagPayloads"]))
    assert disagreements == [], disagreements[:10]
    # the set of flags really exercises both outcomes (and every variant)
    for key in ("rollout-30", "heavy-users", "new-app", "early-signups", "no-gmail",
                "company-rollout", "needs-rollout-30"):
        assert {True, False} <= seen_values[key], key
    assert seen_values["three-way"] == {"control", "red", "blue"}
    assert seen_values["multivariate-55"] == {False, "first", "second", "third", "fourth", "fifth"}
    assert seen_values["pro-or-acme"] == {"stable", "beta", False}
    assert seen_values["switched-off"] == {False}
