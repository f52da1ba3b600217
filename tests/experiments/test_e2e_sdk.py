"""End to end: the real posthog-python SDK evaluates the experiment's flag on a live server (remote
evaluation sends `$feature_flag_called`), simulated users purchase with a known true lift, and the
results API decides. A second experiment on an independent flag over the same users has no effect
and must not say "ship"."""

from __future__ import annotations

import random

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N_USERS = 3000
RATES = {"control": 0.10, "test": 0.15}   # the true effect: +50% relative
BASE = "/api/projects/@current/experiments/"


@pytest.fixture(scope="module")
def traffic(server):
    from posthog import Posthog

    with server.api() as c:
        ids = {}
        for name, key, method in (("Checkout", "e2e-checkout", "bayesian"),
                                  ("Null", "e2e-null", "frequentist")):
            r = c.post(BASE, json={"name": name, "feature_flag_key": key,
                                   "metrics": [{"metric_type": "funnel", "series": [{"event": "purchase"}]}],
                                   "stats_config": {"method": method}})
            assert r.status_code == 201, r.text
            r = c.post(f"{BASE}{r.json()['id']}/launch/")
            assert r.status_code == 200 and r.json()["status"] == "running", r.text
            ids[key] = r.json()["id"]
    client = Posthog(server.token, host=server.url, flush_at=500, flush_interval=0.2, max_retries=1,
                     feature_flags_request_timeout_seconds=10)
    rnd = random.Random(20240601)
    seen = {"e2e-checkout": {}, "e2e-null": {}}
    bought = {}
    for i in range(N_USERS):
        did = f"sdk-user-{i}"
        variant = client.get_feature_flag("e2e-checkout", did)
        null_variant = client.get_feature_flag("e2e-null", did)
        assert variant in RATES and null_variant in RATES, (variant, null_variant)
        seen["e2e-checkout"][did], seen["e2e-null"][did] = variant, null_variant
        bought[did] = rnd.random() < RATES[variant]
        if bought[did]:
            client.capture("purchase", distinct_id=did, properties={"amount": 99})
    client.flush()
    client.shutdown()
    return ids, seen, bought


def _results(server, exp_id: int) -> dict:
    with server.api() as c:
        r = c.get(f"{BASE}{exp_id}/results/")
    assert r.status_code == 200, r.text
    return r.json()


def test_true_lift_ends_in_ship(server, traffic):
    ids, seen, bought = traffic
    res = _results(server, ids["e2e-checkout"])
    assignment = seen["e2e-checkout"]
    expected_n = {v: sum(1 for x in assignment.values() if x == v) for v in RATES}
    expected_conv = {v: sum(1 for d, x in assignment.items() if x == v and bought[d]) for v in RATES}
    # every SDK call became one exposure; nobody saw two variants
    assert res["exposures"] == expected_n
    assert res["multiple_variant_persons"] == 0
    assert not res["srm"]["mismatch"]
    rows = {r["key"]: r for r in res["metrics"][0]["variants"]}
    for v in RATES:
        assert rows[v]["exposures"] == expected_n[v]
        assert rows[v]["sum"] == expected_conv[v]
        assert rows[v]["value"] == pytest.approx(expected_conv[v] / expected_n[v])
    test = rows["test"]
    lo, hi = test["lift_interval"]
    assert lo < 0.5 < hi and lo > 0, test          # covers the true +50% and excludes 0
    assert test["chance_to_win"] > 0.95 and test["significant"]
    assert res["recommendation"]["action"] == "ship" and res["recommendation"]["variant"] == "test"
    assert "test beats control" in res["recommendation"]["reason"]
    # the cumulative series ends at the same numbers
    last = res["cumulative"][0]["days"][-1]["variants"]
    assert last["test"]["exposures"] == expected_n["test"] and last["test"]["lift"] == pytest.approx(test["lift"])


def test_null_experiment_does_not_ship(server, traffic):
    ids, seen, bought = traffic
    res = _results(server, ids["e2e-null"])
    assignment = seen["e2e-null"]
    assert res["exposures"] == {v: sum(1 for x in assignment.values() if x == v) for v in RATES}
    test = next(r for r in res["metrics"][0]["variants"] if r["key"] == "test")
    assert test["p_value"] is not None and test["chance_to_win"] is None   # frequentist
    assert res["recommendation"]["action"] != "ship"
    assert res["recommendation"]["action"] == "keep_running", res["recommendation"]


def test_shipping_rolls_the_flag_to_the_winner(server, traffic):
    from posthog import Posthog

    ids, _, _ = traffic
    with server.api() as c:
        r = c.post(f"{BASE}{ids['e2e-checkout']}/ship/", json={"variant": "test"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "stopped" and r.json()["shipped_variant"] == "test"
    client = Posthog(server.token, host=server.url, send=False)
    assert {client.get_feature_flag("e2e-checkout", f"someone-{i}", send_feature_flag_events=False)
            for i in range(30)} == {"test"}
    client.shutdown()
