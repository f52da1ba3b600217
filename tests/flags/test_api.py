"""Feature flags over HTTP on a live server: management API, /flags and /decide, definitions,
remote config, and the CLI changing flags under a running server."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from livesrv import ROOT

BASE = "/api/projects/@current/feature_flags/"


def _create(server, body: dict) -> dict:
    with server.api() as c:
        r = c.post(BASE, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _flags(server, distinct_id: str, keys: list[str] | None = None, path: str = "/flags/?v=2", **body) -> dict:
    payload = {"token": server.token, "distinct_id": distinct_id, **body}
    if keys is not None:
        payload["flag_keys_to_evaluate"] = keys
    r = httpx.post(server.url + path, json=payload, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_crud_versions_soft_delete_and_activity(server):
    key = _uniq("crud")
    flag = _create(server, {"key": key, "name": "Checkout v2",
                            "filters": {"groups": [{"properties": [], "rollout_percentage": 100}],
                                        "payloads": {"true": {"color": "green"}}}})
    assert flag["version"] == 1 and flag["active"] and not flag["deleted"]
    assert flag["filters"]["payloads"]["true"] == '{"color":"green"}'
    fid = flag["id"]
    with server.api() as c:
        assert c.get(f"{BASE}{fid}/").json()["key"] == key
        assert key in [f["key"] for f in c.get(BASE).json()["results"]]
        r = c.patch(f"{BASE}{fid}/", json={"name": "Checkout v3", "active": False})
        assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["active"] is False
        assert _flags(server, "u1", [key])["flags"][key]["reason"]["code"] == "flag_disabled"
        r = c.patch(f"{BASE}{fid}/", json={"active": True, "version": 1})  # stale version
        assert r.status_code == 409 and r.json()["attr"] == "version"
        assert c.patch(f"{BASE}{fid}/", json={"active": True, "version": 2}).json()["version"] == 3
        assert _flags(server, "u1", [key])["flags"][key]["enabled"] is True
        assert c.delete(f"{BASE}{fid}/").status_code == 204
        got = c.get(f"{BASE}{fid}/").json()
        assert got["deleted"] is True and got["version"] == 4
        assert key not in [f["key"] for f in c.get(BASE).json()["results"]]
        assert key not in _flags(server, "u1")["flags"]
        assert c.patch(f"{BASE}{fid}/", json={"name": "x"}).status_code == 404
        # the key is free again once the old flag is deleted
        assert c.post(BASE, json={"key": key}).status_code == 201
        act = c.get(f"{BASE}{fid}/activity/").json()["results"]
    assert [a["activity"] for a in act] == ["deleted", "updated", "updated", "created"]
    assert [a["version"] for a in act] == [4, 3, 2, 1]
    assert all("phx_test" in a["user"]["label"] for a in act)
    upd = act[2]
    assert {c["field"] for c in upd["detail"]["changes"]} == {"name", "active"}
    assert upd["detail"]["before"]["name"] == "Checkout v2" and upd["detail"]["after"]["name"] == "Checkout v3"
    assert act[0]["detail"]["after"]["deleted"] is True


GOOD_GROUPS = [{"properties": [], "rollout_percentage": 50}]
VALIDATION_CASES = [
    ({"name": "no key"}, "key", "required"),
    ({"key": "has space"}, "key", "invalid_key"),
    ({"key": "k", "active": "yes"}, "active", "invalid_input"),
    ({"key": "k", "colour": "red"}, "colour", "unknown_field"),
    ({"key": "k", "filters": []}, "filters", "invalid_input"),
    ({"key": "k", "filters": {"groups": GOOD_GROUPS, "bogus": 1}}, "filters.bogus", "unknown_field"),
    ({"key": "k", "filters": {"groups": [{"properties": [], "rollout_percentage": 101}]}},
     "filters.groups[0].rollout_percentage", "invalid_rollout"),
    ({"key": "k", "filters": {"groups": [{"properties": [], "rollout_percentage": "50"}]}},
     "filters.groups[0].rollout_percentage", "invalid_rollout"),
    ({"key": "k", "filters": {"groups": [{"properties": [{"key": "a", "operator": "equals", "value": 1}]}]}},
     "filters.groups[0].properties[0].operator", "invalid_operator"),
    ({"key": "k", "filters": {"groups": [{"properties": [{"key": "a", "operator": "gt", "value": "abc"}]}]}},
     "filters.groups[0].properties[0].value", "invalid_input"),
    ({"key": "k", "filters": {"groups": [{"properties": [{"key": "a", "operator": "regex", "value": "(["}]}]}},
     "filters.groups[0].properties[0].value", "invalid_input"),
    ({"key": "k", "filters": {"groups": [{"properties": [{"key": "a", "operator": "semver_gt", "value": "x.y"}]}]}},
     "filters.groups[0].properties[0].value", "invalid_input"),
    ({"key": "k", "filters": {"groups": [{"properties": [{"key": "a", "operator": "is_date_after", "value": "soon"}]}]}},
     "filters.groups[0].properties[0].value", "invalid_input"),
    ({"key": "k", "filters": {"groups": [{"properties": [{"key": "a", "type": "event"}]}]}},
     "filters.groups[0].properties[0].type", "invalid_input"),
    ({"key": "k", "filters": {"groups": [{"properties": [{"type": "cohort", "value": 999}]}]}},
     "filters.groups[0].properties[0].value", "not_found"),
    ({"key": "k", "filters": {"groups": [{"properties": [{"type": "flag", "key": "nope", "value": True}]}]}},
     "filters.groups[0].properties[0].key", "not_found"),
    ({"key": "k", "filters": {"groups": GOOD_GROUPS, "multivariate": {"variants": [
        {"key": "a", "rollout_percentage": 50}, {"key": "b", "rollout_percentage": 40}]}}},
     "filters.multivariate.variants", "invalid_variants"),
    ({"key": "k", "filters": {"groups": GOOD_GROUPS, "multivariate": {"variants": [
        {"key": "a", "rollout_percentage": 50}, {"key": "a", "rollout_percentage": 50}]}}},
     "filters.multivariate.variants[1].key", "duplicate_variant"),
    ({"key": "k", "filters": {"groups": [{"properties": [], "rollout_percentage": 50, "variant": "zzz"}],
                              "multivariate": {"variants": [{"key": "a", "rollout_percentage": 100}]}}},
     "filters.groups[0].variant", "invalid_variant"),
    ({"key": "k", "filters": {"groups": GOOD_GROUPS, "payloads": {"control": 1}}},
     "filters.payloads.control", "invalid_payload"),
    ({"key": "k", "filters": {"groups": GOOD_GROUPS, "aggregation_group_type_index": 9}},
     "filters.aggregation_group_type_index", "invalid_input"),
    ({"key": "k", "filters": {"groups": GOOD_GROUPS, "holdout": {"id": 1, "exclusion_percentage": 120}}},
     "filters.holdout.exclusion_percentage", "invalid_rollout"),
]


@pytest.mark.parametrize("body,attr,code", VALIDATION_CASES)
def test_validation_errors_are_precise_400s(server, body, attr, code):
    with server.api() as c:
        r = c.post(BASE, json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert (err["attr"], err["code"]) == (attr, code), err
    assert err["type"] == "validation_error" and err["detail"]


def test_duplicate_key_cycles_and_malformed_bodies(server):
    key = _uniq("dup")
    _create(server, {"key": key})
    with server.api() as c:
        r = c.post(BASE, json={"key": key})
        assert (r.status_code, r.json()["code"], r.json()["attr"]) == (400, "unique", "key")
        r = c.post(BASE, content=b"{not json", headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["code"]) == (400, "invalid_json")
        a = _create(server, {"key": _uniq("a")})
        dep = {"type": "flag", "key": a["key"], "operator": "flag_evaluates_to", "value": True}
        b = _create(server, {"key": _uniq("b"), "filters": {"groups": [{"properties": [dep]}]}})
        back = {"type": "flag", "key": b["key"], "operator": "flag_evaluates_to", "value": True}
        r = c.patch(f"{BASE}{a['id']}/", json={"filters": {"groups": [{"properties": [back]}]}})
        assert (r.status_code, r.json()["code"]) == (400, "circular_dependency")


def test_auth(server):
    assert httpx.get(server.url + BASE).status_code == 401
    r = httpx.post(server.url + BASE, json={"key": "x"}, headers={"Authorization": f"Bearer {server.token}"})
    assert (r.status_code, r.json()["code"]) == (401, "project_token_not_allowed")
    r = httpx.get(server.url + "/flags/definitions", params={"token": server.token},
                  headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 401
    r = httpx.get(server.url + "/flags/definitions", params={"token": "phc_nope"},
                  headers={"Authorization": f"Bearer {server.api_key}"})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_token")


def test_response_shapes_and_encodings(server):
    key, mv = _uniq("shape"), _uniq("shapemv")
    _create(server, {"key": key, "filters": {"groups": [{"properties": [], "rollout_percentage": 100}],
                                             "payloads": {"true": {"n": 1}}}})
    _create(server, {"key": mv, "filters": {"groups": [{"properties": [{"key": "plan", "value": "pro"}]}],
                                            "multivariate": {"variants": [{"key": "only", "rollout_percentage": 100}]}}})
    body = {"token": server.token, "distinct_id": "shape-user", "flag_keys_to_evaluate": [key, mv]}
    v2 = httpx.post(server.url + "/flags/?v=2", json=body).json()
    assert v2["errorsWhileComputingFlags"] is False and uuid.UUID(v2["requestId"])
    assert v2["flags"][key]["enabled"] is True and v2["flags"][key]["metadata"]["payload"] == '{"n":1}'
    assert v2["flags"][mv]["reason"]["code"] == "no_condition_match"
    assert "supportedCompression" not in v2  # ?v=2 without config
    assert "supportedCompression" in httpx.post(server.url + "/flags", json=body).json()  # no v: config
    v1 = httpx.post(server.url + "/flags/?v=1", json=body).json()
    assert v1["featureFlags"] == {key: True, mv: False} and v1["featureFlagPayloads"] == {key: '{"n":1}'}
    d1 = httpx.post(server.url + "/decide/", json=body).json()
    assert d1["featureFlags"] == [key] and "supportedCompression" in d1
    d2 = httpx.post(server.url + "/decide/?v=2", json={**body, "person_properties": {"plan": "pro"}}).json()
    assert d2["featureFlags"] == {key: True, mv: "only"}
    d3 = httpx.post(server.url + "/decide/?v=3", json=body).json()
    assert d3["featureFlags"] == {key: True, mv: False}
    d4 = httpx.post(server.url + "/decide/?v=4", json=body).json()
    assert set(d4["flags"]) == {key, mv}
    # aliases: $token / $distinct_id / $properties
    alias = {"$token": server.token, "$distinct_id": 42, "$properties": {"plan": "pro"}, "flag_keys": [mv]}
    assert httpx.post(server.url + "/flags/?v=2", json=alias).json()["flags"][mv]["variant"] == "only"
    # legacy base64 form and gzip bodies
    raw = json.dumps({**body, "person_properties": {"plan": "pro"}}).encode()
    form = httpx.post(server.url + "/decide/?v=3", data={"data": base64.b64encode(raw).decode()})
    assert form.status_code == 200 and form.json()["featureFlags"][mv] == "only"
    gz = httpx.post(server.url + "/flags/?v=2", content=gzip.compress(raw), headers={"content-type": "text/plain"})
    assert gz.json()["flags"][mv]["variant"] == "only"
    # disable_flags, errors
    assert httpx.post(server.url + "/flags/?v=2", json={**body, "disable_flags": True}).json()["flags"] == {}
    r = httpx.post(server.url + "/flags/?v=2", json={"token": "phc_unknown", "distinct_id": "x"})
    assert r.status_code == 401
    r = httpx.post(server.url + "/flags/?v=2", content=b"[1,2]", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(server.url + "/flags/?v=2", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(server.url + "/flags/?v=2", json={"token": server.token})
    assert (r.status_code, r.json()["code"]) == (400, "missing_distinct_id")
    r = httpx.post(server.url + "/flags/?v=2", json={**body, "person_properties": "nope"})
    assert r.status_code == 400


def _capture(server, events: list[dict]) -> None:
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": events})
    assert r.status_code == 200, r.text


def test_stored_person_and_group_properties(server):
    key, gkey = _uniq("stored"), _uniq("storedgroup")
    _create(server, {"key": key, "filters": {"groups": [{"properties": [
        {"key": "plan", "value": "enterprise", "type": "person"}], "rollout_percentage": 100}]}})
    uid = _uniq("person")
    _capture(server, [{"event": "$set", "distinct_id": uid, "properties": {"$set": {"plan": "enterprise"}}},
                      {"event": "$groupidentify", "distinct_id": uid,
                       "properties": {"$group_type": "org", "$group_key": "acme", "$group_set": {"seats": 250}}}])
    assert _flags(server, uid, [key])["flags"][key]["enabled"] is True
    # request properties override the stored ones
    assert _flags(server, uid, [key], person_properties={"plan": "free"})["flags"][key]["enabled"] is False
    with server.api() as c:
        mapping = c.get("/flags/definitions", params={"token": server.token}).json()["group_type_mapping"]
    index = int(next(i for i, name in mapping.items() if name == "org"))
    _create(server, {"key": gkey, "filters": {"aggregation_group_type_index": index, "groups": [{"properties": [
        {"key": "seats", "operator": "gte", "value": 100, "type": "group", "group_type_index": index}],
        "rollout_percentage": 100}]}})
    assert _flags(server, uid, [gkey], groups={"org": "acme"})["flags"][gkey]["enabled"] is True
    r = _flags(server, uid, [gkey])["flags"][gkey]
    assert (r["enabled"], r["reason"]["code"]) == (False, "no_group_type")
    r = _flags(server, uid, [gkey], groups={"org": "acme"}, group_properties={"org": {"seats": 3}})
    assert r["flags"][gkey]["enabled"] is False


def test_experience_continuity_stores_hash_key_overrides(server):
    key = _uniq("eec")
    _create(server, {"key": key, "ensure_experience_continuity": True,
                     "filters": {"groups": [{"properties": [], "rollout_percentage": 50}]}})
    from sightline.flags.evaluate import hash_value

    anon = next(f"anon-{i}-{key}" for i in range(200) if hash_value(key, f"anon-{i}-{key}") <= 0.5)
    user = next(f"user-{i}-{key}" for i in range(200) if hash_value(key, f"user-{i}-{key}") > 0.5)
    assert _flags(server, anon, [key])["flags"][key]["enabled"] is True
    assert _flags(server, user, [key])["flags"][key]["enabled"] is False
    # the first request after identify carries $anon_distinct_id: the anonymous bucket sticks
    assert _flags(server, user, [key], **{"$anon_distinct_id": anon})["flags"][key]["enabled"] is True
    assert _flags(server, user, [key])["flags"][key]["enabled"] is True


def test_definitions_etag_and_remote_config(server):
    key = _uniq("defs")
    _create(server, {"key": key, "filters": {"groups": [{"properties": [], "rollout_percentage": 30}],
                                             "payloads": {"true": {"theme": "dark"}}}})
    with server.api() as c:
        for path in ("/flags/definitions", "/api/feature_flag/local_evaluation/",
                     "/api/feature_flag/local_evaluation"):
            r = c.get(path, params={"token": server.token, "send_cohorts": ""})
            assert r.status_code == 200, path
            body = r.json()
            assert {"flags", "group_type_mapping", "cohorts"} <= set(body)
            flag = next(f for f in body["flags"] if f["key"] == key)
            assert {"id", "team_id", "name", "key", "active", "deleted", "ensure_experience_continuity",
                    "version", "filters"} <= set(flag)
            etag = r.headers["etag"]
            r2 = c.get(path, params={"token": server.token, "send_cohorts": ""}, headers={"If-None-Match": etag})
            assert r2.status_code == 304 and r2.headers["etag"] == etag
        _create(server, {"key": _uniq("defs2")})
        r3 = c.get("/flags/definitions", params={"token": server.token, "send_cohorts": ""},
                   headers={"If-None-Match": etag})
        assert r3.status_code == 200 and r3.headers["etag"] != etag
        r = c.get(f"/api/projects/@current/feature_flags/{key}/remote_config", params={"token": server.token})
        assert r.status_code == 200 and json.loads(r.json()) == {"theme": "dark"}
        r = c.get("/api/projects/@current/feature_flags/no-such-flag/remote_config", params={"token": server.token})
        assert r.status_code == 404
    r = httpx.get(server.url + f"/api/projects/@current/feature_flags/{key}/remote_config",
                  params={"token": server.token})
    assert r.status_code == 401


def test_array_config_reports_flags(fresh_server):
    url = f"{fresh_server.url}/array/{fresh_server.token}/config"
    assert httpx.get(url).json()["hasFeatureFlags"] is False
    _create(fresh_server, {"key": "first-flag"})
    assert httpx.get(url).json()["hasFeatureFlags"] is True


def _cli(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sightline.cli", "flags", *args, "--data-dir",
                           str(server.data_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_changes_reach_the_running_server(server, tmp_path):
    key = _uniq("cli")
    r = _cli(server, "create", "--key", key, "--name", "From the CLI", "--rollout", "100",
             "--payload", '{"limit": 5}')
    assert r.returncode == 0, r.stderr
    got = _flags(server, "cli-user", [key])["flags"][key]
    assert got["enabled"] is True and json.loads(got["metadata"]["payload"]) == {"limit": 5}
    r = _cli(server, "update", "--key", key, "--variants", "control:50,test:50",
             "--payload", 'test={"limit": 9}')
    assert r.returncode == 0, r.stderr
    values = {_flags(server, f"cli-user-{i}", [key])["flags"][key]["variant"] for i in range(20)}
    assert values == {"control", "test"}
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"groups": [{"properties": [{"key": "plan", "value": "pro"}],
                                               "rollout_percentage": 100}]}))
    assert _cli(server, "update", "--key", key, "--filters-json", str(filters)).returncode == 0
    assert _flags(server, "cli-user", [key])["flags"][key]["enabled"] is False
    assert _flags(server, "cli-user", [key], person_properties={"plan": "pro"})["flags"][key]["enabled"]
    listed = _cli(server, "list")
    assert listed.returncode == 0 and key in listed.stdout
    bad = _cli(server, "update", "--key", key, "--variants", "a:50,b:20")
    assert bad.returncode == 2 and "add up to 100" in bad.stderr
    assert _cli(server, "delete", "--key", key).returncode == 0
    deadline = time.time() + 5
    while key in _flags(server, "cli-user")["flags"] and time.time() < deadline:
        time.sleep(0.1)
    assert key not in _flags(server, "cli-user")["flags"]
    with server.api() as c:
        rows = c.get(BASE).json()["results"]
    assert key not in [f["key"] for f in rows]
