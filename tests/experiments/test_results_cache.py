"""The experiment results cache: reused while nothing is stored and the experiment is unchanged,
recomputed when events arrive, when the definition changes, after the TTL (a fake clock), and on
``refresh``; the web API's ``?refresh=true`` and its validation on a live server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

import sightline
from sightline.experiments import results as res
from sightline.experiments.service import ExperimentService

START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
GOAL = [{"metric_type": "funnel", "name": "Purchase", "series": [{"event": "purchase"}]}]


def _traffic(key: str, ids: range, buyers: set[int]) -> list[dict]:
    out = []
    for i in ids:
        did = f"{key}-{i}"
        t = START + timedelta(minutes=5 + i)
        out.append({"event": "$feature_flag_called", "distinct_id": did, "timestamp": t.isoformat(),
                    "properties": {"$feature_flag": key, "$feature_flag_response": ("control", "test")[i % 2]}})
        if i in buyers:
            out.append({"event": "purchase", "distinct_id": did, "timestamp": (t + timedelta(minutes=1)).isoformat()})
    return out


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def setup(tmp_path):
    core = sightline.open(tmp_path / "data")
    key = "cache-" + uuid.uuid4().hex[:6]
    core.ingest(_traffic(key, range(40), buyers={0, 1, 2, 4}))
    svc = ExperimentService(core.meta, core.flags)
    exp = svc.create(core.project.id, {"name": "Cache", "feature_flag_key": key, "metrics": GOAL}, "test")
    exp = svc.launch(core.project.id, exp["id"], "test", start_date=START.isoformat())
    yield core, svc, exp, key
    core.close()


def _sums(doc: dict) -> dict:
    return {v["key"]: v["sum"] for v in doc["metrics"][0]["variants"]}


def test_reused_until_events_arrive_then_recomputed(setup):
    core, _, exp, key = setup
    cache = res.ResultsCache(clock=Clock())
    first = cache.results(core, core.project, exp)
    assert first["cached"] is False and first["exposures"] == {"control": 20, "test": 20}
    assert _sums(first) == {"control": 3, "test": 1}      # buyers 0, 2, 4 | 1
    again = cache.results(core, core.project, exp)
    assert again["cached"] is True and again["computed_at"] == first["computed_at"]
    assert again["metrics"] == first["metrics"] and again["cumulative"] == first["cumulative"]
    # the page's first request (no cumulative series) is answered from the full result
    light = cache.results(core, core.project, exp, cumulative=False)
    assert light["cached"] is True and light["cumulative"] == [] and light["metrics"] == first["metrics"]
    assert cache.misses == 1 and cache.hits == 2

    core.ingest(_traffic(key, range(40, 50), buyers={41, 43}))   # new data: a new data version
    fresh = cache.results(core, core.project, exp)
    assert fresh["cached"] is False and fresh["exposures"] == {"control": 25, "test": 25}
    assert _sums(fresh) == {"control": 3, "test": 3}    # + 41, 43 (test)
    assert cache.results(core, core.project, exp)["cached"] is True


def test_definition_change_ttl_and_refresh(setup):
    core, svc, exp, _ = setup
    clock = Clock()
    cache = res.ResultsCache(ttl=30, clock=clock)
    assert cache.results(core, core.project, exp)["cached"] is False
    # a new version of the experiment (renamed): recomputed, and the new name shows
    renamed = svc.update(core.project.id, exp["id"], {"name": "Renamed", "version": exp["version"]}, "test")
    assert renamed["version"] != exp["version"]
    doc = cache.results(core, core.project, renamed)
    assert doc["cached"] is False and doc["name"] == "Renamed"
    assert cache.results(core, core.project, renamed)["cached"] is True
    # the TTL: fresh just before it, recomputed at it
    clock.t += 29.9
    assert cache.results(core, core.project, renamed)["cached"] is True
    clock.t += 0.1
    assert cache.results(core, core.project, renamed)["cached"] is False
    # refresh bypasses the cache and replaces the entry
    clock.t += 1
    forced = cache.results(core, core.project, renamed, refresh=True)
    assert forced["cached"] is False
    after = cache.results(core, core.project, renamed)
    assert after["cached"] is True and after["computed_at"] == forced["computed_at"]


def test_not_launched_is_not_cached(setup):
    core, svc, _, key = setup
    draft = svc.create(core.project.id, {"name": "Draft", "feature_flag_key": key + "-d", "metrics": GOAL}, "test")
    cache = res.ResultsCache()
    with pytest.raises(res.NotLaunched):
        cache.results(core, core.project, draft)


def test_refresh_parameter_over_http(server):
    key = "httpcache-" + uuid.uuid4().hex[:6]
    base = "/api/projects/@current/experiments/"
    with server.api() as c:
        r = c.post(base, json={"name": "HTTP cache", "feature_flag_key": key, "metrics": GOAL})
        assert r.status_code == 201, r.text
        eid = r.json()["id"]
        assert c.post(f"{base}{eid}/launch/").status_code == 200
        batch = [{"event": "$feature_flag_called", "distinct_id": f"{key}-{i}",
                  "properties": {"$feature_flag": key, "$feature_flag_response": ("control", "test")[i % 2]}}
                 for i in range(6)]
        assert httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": batch},
                          timeout=10).status_code == 200
        first = c.get(f"{base}{eid}/results/")
        assert first.status_code == 200 and first.json()["exposures"] == {"control": 3, "test": 3}
        forced = c.get(f"{base}{eid}/results/", params={"refresh": "true"}).json()
        assert forced["cached"] is False and forced["exposures"] == {"control": 3, "test": 3}
        bad = c.get(f"{base}{eid}/results/", params={"refresh": "sometimes"})
        assert bad.status_code == 400 and bad.json()["attr"] == "refresh"
        # new events are seen at once (a new data version), cache or not
        more = [{"event": "$feature_flag_called", "distinct_id": f"{key}-x",
                 "properties": {"$feature_flag": key, "$feature_flag_response": "test"}}]
        assert httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": more},
                          timeout=10).status_code == 200
        assert c.get(f"{base}{eid}/results/").json()["exposures"] == {"control": 3, "test": 4}
