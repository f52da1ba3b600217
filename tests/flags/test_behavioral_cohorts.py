"""Flags targeting a behavioural cohort: membership comes from the events, through the query engine."""

import uuid

import httpx


def test_flag_on_behavioural_cohort(server):
    run = uuid.uuid4().hex[:8]
    buyer, browser = f"buyer-{run}", f"browser-{run}"
    batch = [{"event": f"purchase-{run}", "distinct_id": buyer}, {"event": "$pageview", "distinct_id": browser}]
    assert httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": batch}).status_code == 200
    with server.api() as c:
        cohort = c.post("/api/projects/@current/cohorts/", json={"name": f"buyers {run}", "filters": {"properties": {
            "type": "AND", "values": [{"type": "behavioral", "key": f"purchase-{run}", "value": "performed_event",
                                       "time_value": 30, "time_interval": "day"}]}}})
        assert cohort.status_code == 201, cohort.text
        assert cohort.json()["count"] == 1
        flag = c.post("/api/projects/@current/feature_flags/", json={"key": f"buyers-{run}", "filters": {"groups": [
            {"properties": [{"key": "id", "type": "cohort", "value": cohort.json()["id"]}], "rollout_percentage": 100}]}})
        assert flag.status_code in (200, 201), flag.text

    def enabled(distinct_id):
        r = httpx.post(server.url + "/flags/?v=2", json={"token": server.token, "distinct_id": distinct_id})
        assert r.status_code == 200
        return r.json()["flags"][f"buyers-{run}"]["enabled"]

    assert enabled(buyer) is True
    assert enabled(browser) is False
