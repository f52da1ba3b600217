"""The experiments API on a live server: validation errors, the lifecycle draft → running →
stopped/shipped and what it does to the flag, activity, results shape, and the CLI reaching the
running server for results."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest

from livesrv import ROOT

BASE = "/api/projects/@current/experiments/"
FLAGS = "/api/projects/@current/feature_flags/"
GOAL = [{"metric_type": "funnel", "series": [{"event": "purchase"}]}]


def _key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create(c, **body) -> dict:
    r = c.post(BASE, json={"name": "Exp", "feature_flag_key": _key("exp"), **body})
    assert r.status_code == 201, r.text
    return r.json()


def _flag(c, key: str) -> dict:
    return next(f for f in c.get(FLAGS).json()["results"] if f["key"] == key)


def test_needs_a_secret_key(server):
    assert httpx.get(server.url + BASE).status_code == 401
    r = httpx.get(server.url + BASE, headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 401 and r.json()["code"] == "project_token_not_allowed"


@pytest.mark.parametrize("body,attr", [
    ({"feature_flag_key": "x1"}, "name"),
    ({"name": "n"}, "feature_flag_key"),
    ({"name": "n", "feature_flag_key": "bad key!"}, "feature_flag_key"),
    ({"name": "n", "feature_flag_key": "x2", "metrics": [{"metric_type": "median"}]}, "metrics[0].metric_type"),
    ({"name": "n", "feature_flag_key": "x3", "metrics": [{"metric_type": "funnel", "series": []}]}, "metrics[0].series"),
    ({"name": "n", "feature_flag_key": "x4", "metrics": [{"metric_type": "mean", "source": {"event": "p", "math": "sum"}}]},
     "metrics[0].source.math_property"),
    ({"name": "n", "feature_flag_key": "x5", "metrics_guardrails": [{"metric_type": "count", "source": {}}]},
     "metrics_guardrails[0].source.event"),
    ({"name": "n", "feature_flag_key": "x6", "metrics": [{"metric_type": "count", "source": {"event": "p"},
                                                          "conversion_window": -1}]}, "metrics[0].conversion_window"),
    ({"name": "n", "feature_flag_key": "x7", "parameters": {"feature_flag_variants": [
        {"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 40}]}},
     "parameters.feature_flag_variants"),
    ({"name": "n", "feature_flag_key": "x8", "parameters": {"feature_flag_variants": [
        {"key": "a", "rollout_percentage": 50}, {"key": "b", "rollout_percentage": 50}]}},
     "parameters.feature_flag_variants"),
    ({"name": "n", "feature_flag_key": "x9", "stats_config": {"alpha": 0.1}}, "stats_config.alpha"),
    ({"name": "n", "feature_flag_key": "x10", "stats_config": {"confidence_level": 1.5}}, "stats_config.confidence_level"),
    ({"name": "n", "feature_flag_key": "x11", "stats_config": {"sequential": True}}, "stats_config.sequential"),
    ({"name": "n", "feature_flag_key": "x12", "stats_config": {"outlier_capping_percentile": 1}},
     "stats_config.outlier_capping_percentile"),
    ({"name": "n", "feature_flag_key": "x13", "exposure_criteria": {"multiple_variant_handling": "both"}},
     "exposure_criteria.multiple_variant_handling"),
    ({"name": "n", "feature_flag_key": "x14", "exposure_criteria": {"exposure_config": {
        "event": "$pageview", "properties": [{"key": "a", "operator": "nope", "value": 1}]}}},
     "exposure_criteria.exposure_config.properties[0]"),
    ({"name": "n", "feature_flag_key": "x15", "colour": "blue"}, "colour"),
    ({"name": "n", "feature_flag_key": "x16", "start_date": "2025-01-01"}, "start_date"),
])
def test_invalid_definitions_get_a_precise_400(server, body, attr):
    with server.api() as c:
        r = c.post(BASE, json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["type"] == "validation_error" and err["attr"] == attr and err["detail"]


def test_malformed_bodies(server):
    with server.api() as c:
        assert c.post(BASE, content=b"{not json").json()["code"] == "invalid_json"
        assert c.post(BASE, json=[1, 2]).status_code == 400
        assert c.post(BASE, json={}).status_code == 400
        assert c.get(BASE + "999999/").status_code == 404
        assert c.get(BASE + "999999/results/").status_code == 404
        exp = _create(c)
        r = c.post(f"{BASE}{exp['id']}/stop/", json={"colour": 1})
        assert r.status_code == 400 and r.json()["attr"] == "colour"


def test_lifecycle_and_the_flag(server):
    with server.api() as c:
        exp = _create(c, name="Checkout", hypothesis="Shorter is better")
        key, eid = exp["feature_flag_key"], exp["id"]
        assert exp["status"] == "draft" and exp["start_date"] is None and exp["version"] == 1
        assert [v["key"] for v in exp["parameters"]["feature_flag_variants"]] == ["control", "test"]
        flag = _flag(c, key)
        assert flag["active"] is False
        assert [(v["key"], v["rollout_percentage"]) for v in flag["filters"]["multivariate"]["variants"]] == \
            [("control", 50), ("test", 50)]
        # no results before launch, and no launch without a goal metric
        r = c.get(f"{BASE}{eid}/results/")
        assert r.status_code == 409 and r.json()["code"] == "not_launched"
        r = c.post(f"{BASE}{eid}/launch/")
        assert r.status_code == 400 and r.json()["attr"] == "metrics"
        r = c.patch(f"{BASE}{eid}/", json={"metrics": GOAL, "version": 1})
        assert r.status_code == 200 and r.json()["version"] == 2
        assert r.json()["metrics"][0]["uuid"] and r.json()["metrics"][0]["name"] == "purchase"
        assert c.patch(f"{BASE}{eid}/", json={"name": "x", "version": 1}).status_code == 409  # stale
        r = c.post(f"{BASE}{eid}/launch/")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "running" and r.json()["start_date"]
        assert _flag(c, key)["active"] is True
        assert c.post(f"{BASE}{eid}/launch/").status_code == 409
        r = c.patch(f"{BASE}{eid}/", json={"feature_flag_key": _key("other")})
        assert r.status_code == 409 and r.json()["attr"] == "feature_flag_key"
        r = c.get(f"{BASE}{eid}/results/", params={"cumulative": "false"})
        assert r.status_code == 200
        res = r.json()
        assert res["exposures"] == {"control": 0, "test": 0} and res["cumulative"] == []
        assert res["recommendation"]["action"] == "keep_running"
        assert c.get(f"{BASE}{eid}/results/", params={"cumulative": "maybe"}).status_code == 400
        r = c.post(f"{BASE}{eid}/stop/", json={"shipped_variant": "nope"})
        assert r.status_code == 400 and r.json()["attr"] == "shipped_variant"
        r = c.post(f"{BASE}{eid}/stop/", json={"conclusion": "won"})
        assert r.status_code == 200 and r.json()["status"] == "stopped" and r.json()["end_date"]
        assert c.post(f"{BASE}{eid}/stop/").status_code == 409
        r = c.post(f"{BASE}{eid}/ship/", json={"variant": "test"})
        assert r.status_code == 200 and r.json()["shipped_variant"] == "test"
        flag = _flag(c, key)
        assert [(v["key"], v["rollout_percentage"]) for v in flag["filters"]["multivariate"]["variants"]] == \
            [("control", 0), ("test", 100)]
        assert all(g["rollout_percentage"] == 100 for g in flag["filters"]["groups"])
        acts = [a["activity"] for a in c.get(f"{BASE}{eid}/activity/").json()["results"]]
        assert acts == ["shipped", "stopped", "launched", "updated", "created"]
        assert eid in [e["id"] for e in c.get(BASE).json()["results"]]
        assert c.delete(f"{BASE}{eid}/").status_code == 204
        assert c.get(f"{BASE}{eid}/").status_code == 404
        assert eid not in [e["id"] for e in c.get(BASE).json()["results"]]
        assert c.get(FLAGS).status_code == 200 and _flag(c, key)  # the flag stays


def test_existing_flags_are_checked(server):
    with server.api() as c:
        boolean = _key("bool")
        assert c.post(FLAGS, json={"key": boolean, "filters": {"groups": [{"rollout_percentage": 100}]}}).status_code == 201
        r = c.post(BASE, json={"name": "n", "feature_flag_key": boolean})
        assert r.status_code == 400 and "not multivariate" in r.json()["detail"]
        mv = _key("mv")
        variants = [{"key": "control", "rollout_percentage": 34}, {"key": "a", "rollout_percentage": 33},
                    {"key": "b", "rollout_percentage": 33}]
        assert c.post(FLAGS, json={"key": mv, "filters": {"groups": [{"rollout_percentage": 100}],
                                                          "multivariate": {"variants": variants}}}).status_code == 201
        r = c.post(BASE, json={"name": "n", "feature_flag_key": mv, "parameters": {"feature_flag_variants": [
            {"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]}})
        assert r.status_code == 400 and r.json()["attr"] == "parameters.feature_flag_variants"
        exp = _create(c, feature_flag_key=mv)            # takes the flag's three variants
        assert [v["key"] for v in exp["parameters"]["feature_flag_variants"]] == ["control", "a", "b"]
        r = c.post(BASE, json={"name": "again", "feature_flag_key": mv})
        assert r.status_code == 400 and r.json()["code"] == "unique"


def test_results_count_exposures_sent_over_capture_and_the_cli_asks_the_server(server):
    key = _key("cap")
    with server.api() as c:
        exp = _create(c, feature_flag_key=key, metrics=GOAL,
                      metrics_secondary=[{"metric_type": "count", "source": {"event": "$pageview"}}])
        assert c.post(f"{BASE}{exp['id']}/launch/").status_code == 200
    batch = []
    for i in range(40):
        did = f"{key}-u{i}"
        variant = "control" if i % 2 else "test"
        batch.append({"event": "$feature_flag_called", "distinct_id": did,
                      "properties": {"$feature_flag": key, "$feature_flag_response": variant}})
        if i % 4 == 0:
            batch.append({"event": "purchase", "distinct_id": did, "properties": {}})
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": batch}, timeout=10)
    assert r.status_code == 200
    with server.api() as c:
        res = c.get(f"{BASE}{exp['id']}/results/").json()
    assert res["exposures"] == {"control": 20, "test": 20}
    goal = res["metrics"][0]
    assert goal["role"] == "goal" and [v["key"] for v in goal["variants"]] == ["control", "test"]
    rows = {v["key"]: v for v in goal["variants"]}
    assert rows["control"]["sum"] == 0 and rows["test"]["sum"] == 10 and rows["test"]["value"] == 0.5
    assert {"lift", "lift_interval", "chance_to_win", "p_value", "significant"} <= set(rows["test"])
    assert res["metrics"][1]["role"] == "secondary"
    assert res["recommendation"]["action"] == "keep_running" and "Not enough exposures" in res["recommendation"]["reason"]
    assert res["srm"]["mismatch"] is False and res["cumulative"][0]["days"]
    # the CLI finds the running server of the data directory and asks it
    out = subprocess.run([sys.executable, "-m", "sightline.cli", "experiments", "results", key,
                          "--data-dir", str(server.data_dir)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "control" in out.stdout and "50.00%" in out.stdout and "KEEP RUNNING" in out.stdout
