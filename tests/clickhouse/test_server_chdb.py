"""The whole product on ClickHouse: a live `sightline serve --store chdb:///…` driven over HTTP.

The real posthog-python SDK captures and evaluates flags; then the events and persons APIs,
a trends insight, user SQL, the web app's autocomplete and live events, /flags with a
person-property flag and a cohort flag, an experiment's results, GDPR deletion and retention
pruning all run on ClickHouse's engine (chdb, in the server process). Every number is checked
against what the test sent."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from livesrv import start_server, stop_server

pytest.importorskip("chdb")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

UTC = timezone.utc
N_USERS = 40
PLANS = ["free", "pro"]
BROWSERS = ["Chrome", "Firefox", "Safari"]
P = "/api/projects/@current"


@pytest.fixture(scope="module")
def ch_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("chsrv")
    srv = start_server(base / "data", args=["--store", f"chdb://{base / 'chdb-engine'}"],
                       extra_env={"SIGHTLINE_STORE": "", "SIGHTLINE_CHDB_PATH": ""})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def sent(ch_server):
    """Users with a plan (person property) and pageviews sent by the SDK, plus an experiment."""
    from posthog import Posthog

    srv = ch_server
    with srv.api() as c:
        r = c.post(f"{P}/experiments/", json={
            "name": "CH checkout", "feature_flag_key": "ch-checkout",
            "metrics": [{"metric_type": "funnel", "series": [{"event": "purchase"}]}]})
        assert r.status_code == 201, r.text
        exp_id = r.json()["id"]
        assert c.post(f"{P}/experiments/{exp_id}/launch/").status_code == 200
    client = Posthog(srv.token, host=srv.url, flush_at=200, flush_interval=0.2, max_retries=1,
                     feature_flags_request_timeout_seconds=10)
    rnd = random.Random(11)
    now = datetime.now(UTC).replace(microsecond=0)
    users, events, variants, bought = {}, [], {}, {}
    for i in range(N_USERS):
        did = f"ch-user-{i}"
        users[did] = PLANS[i % 2]
        client.capture("$identify", distinct_id=did, properties={"$set": {"plan": users[did], "email": f"{did}@x.io"}},
                       timestamp=now - timedelta(days=3))
        for k in range(1 + i % 3):
            browser = BROWSERS[(i + k) % 3]
            ts = now - timedelta(days=2, minutes=i * 3 + k)
            client.capture("$pageview", distinct_id=did, properties={"$browser": browser}, timestamp=ts)
            events.append((did, browser, ts))
        variants[did] = client.get_feature_flag("ch-checkout", did)
        bought[did] = rnd.random() < 0.5
        if bought[did]:
            client.capture("purchase", distinct_id=did)
    client.flush()
    client.shutdown()
    return {"users": users, "pageviews": events, "variants": variants, "bought": bought, "exp_id": exp_id}


def _all_pages(c, path, params):
    out, url = [], path
    while url:
        r = c.get(url, params=params if url == path else None)
        assert r.status_code == 200, r.text
        out += r.json()["results"]
        url = r.json().get("next")
    return out


def test_events_persons_trends_and_sql(ch_server, sent):
    with ch_server.api() as c:
        assert c.get("/api/ops/status").json()["store"] == "clickhouse"
        assert (ch_server.data_dir.parent / "chdb-engine").is_dir() and not (ch_server.data_dir / "events.duckdb").exists()
        pageviews = _all_pages(c, f"{P}/events/", {"event": "$pageview", "limit": 13})
        assert len(pageviews) == len(sent["pageviews"])
        assert len({e["uuid"] for e in pageviews}) == len(pageviews)  # the cursor neither repeats nor skips
        stamps = [e["timestamp"] for e in pageviews]
        assert stamps == sorted(stamps, reverse=True)
        assert Counter(e["properties"]["$browser"] for e in pageviews) == Counter(b for _, b, _ in sent["pageviews"])
        mine = c.get(f"{P}/events/", params={"distinct_id": "ch-user-5"}).json()["results"]
        assert {e["event"] for e in mine} >= {"$identify", "$pageview"}
        assert all(e["distinct_id"] == "ch-user-5" for e in mine)

        persons = _all_pages(c, f"{P}/persons/", {"limit": 7})
        assert len(persons) == N_USERS
        by_did = {p["distinct_ids"][0]: p for p in persons}
        assert {d: p["properties"]["plan"] for d, p in by_did.items()} == sent["users"]
        found = c.get(f"{P}/persons/", params={"search": "CH-USER-17@"}).json()["results"]
        assert [p["distinct_ids"] for p in found] == [["ch-user-17"]]

        r = c.post(f"{P}/query/", json={"query": {
            "kind": "TrendsQuery", "series": [{"event": "$pageview", "math": "dau"}, {"event": "$pageview"}],
            "dateRange": {"date_from": "-7d"}, "interval": "week",
            "breakdownFilter": {"breakdown": "plan", "breakdown_type": "person"}}})
        assert r.status_code == 200, r.text
        totals = {(x["label"].split(" - ")[0], x["breakdown_value"]): x["count"] for x in r.json()["results"]}
        for plan in PLANS:
            views = [e for e in sent["pageviews"] if sent["users"][e[0]] == plan]
            assert any(v == len(views) for (_, b), v in totals.items() if b == plan), totals

        sql = ("SELECT person.properties.plan AS plan, count(*) AS n, count(DISTINCT person_id) AS persons "
               "FROM events WHERE event = '$pageview' GROUP BY 1 ORDER BY 1")
        r = c.post(f"{P}/query/", json={"query": {"kind": "HogQLQuery", "query": sql}})
        assert r.status_code == 200, r.text
        expected = [[plan, sum(1 for e in sent["pageviews"] if sent["users"][e[0]] == plan), N_USERS // 2]
                    for plan in PLANS]
        assert r.json()["results"] == expected
        bad = c.post(f"{P}/query/", json={"query": {"kind": "HogQLQuery", "query": "SELECT * FROM system.tables"}})
        assert bad.status_code == 400 and bad.json()["code"] == "sql_table_not_allowed"


def test_autocomplete_and_live_events(ch_server, sent):
    with ch_server.api() as c:
        names = {d["name"]: d["volume"] for d in c.get(f"{P}/event_definitions/").json()["results"]}
        assert names["$pageview"] == len(sent["pageviews"])
        props = {d["name"] for d in c.get(f"{P}/property_definitions/", params={"type": "person"}).json()["results"]}
        assert {"plan", "email"} <= props
        r = c.get(f"{P}/live_events/", params={"event": "$pageview", "limit": 500, "properties":
                  '[{"key": "$browser", "value": "Safari", "operator": "exact", "type": "event"}]'})
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == sum(1 for e in sent["pageviews"] if e[1] == "Safari")
        assert r.json()["latest"]


def test_flags_by_person_property_and_cohort(ch_server, sent):
    with ch_server.api() as c:
        r = c.post(f"{P}/feature_flags/", json={"key": "ch-pro", "filters": {"groups": [{"properties": [
            {"key": "plan", "value": ["pro"], "operator": "exact", "type": "person"}], "rollout_percentage": 100}]}})
        assert r.status_code == 201, r.text
        r = c.post(f"{P}/cohorts/", json={"name": "Free users", "filters": {"properties": {"type": "AND", "values": [
            {"key": "plan", "value": "free", "operator": "exact", "type": "person"}]}}})
        assert r.status_code == 201, r.text
        cohort = r.json()["id"]
        r = c.post(f"{P}/feature_flags/", json={"key": "ch-free-cohort", "filters": {"groups": [{"properties": [
            {"key": "id", "value": cohort, "type": "cohort"}], "rollout_percentage": 100}]}})
        assert r.status_code == 201, r.text
    for did, plan in list(sent["users"].items())[:8]:
        r = httpx.post(ch_server.url + "/flags/?v=2", json={"token": ch_server.token, "distinct_id": did}, timeout=10)
        assert r.status_code == 200, r.text
        flags = r.json()["flags"]
        assert flags["ch-pro"]["enabled"] is (plan == "pro"), (did, flags["ch-pro"])
        assert flags["ch-free-cohort"]["enabled"] is (plan == "free"), (did, flags["ch-free-cohort"])


def test_experiment_results(ch_server, sent):
    with ch_server.api() as c:
        r = c.get(f"{P}/experiments/{sent['exp_id']}/results/")
    assert r.status_code == 200, r.text
    res = r.json()
    variants = sent["variants"]
    assert res["exposures"] == dict(Counter(variants.values()))
    rows = {row["key"]: row for row in res["metrics"][0]["variants"]}
    for v, n in Counter(variants.values()).items():
        assert rows[v]["exposures"] == n
        assert rows[v]["sum"] == sum(1 for d, x in variants.items() if x == v and sent["bought"][d])


def test_gdpr_delete_and_prune(ch_server, sent):
    victim = "ch-user-3"
    with ch_server.api() as c:
        pid = c.get(f"{P}/persons/", params={"distinct_id": victim}).json()["results"][0]["id"]
        n_events = len(_all_pages(c, f"{P}/events/", {"distinct_id": victim}))
        assert n_events >= 2
        r = c.delete(f"{P}/persons/{pid}/", params={"delete_events": "true"})
        assert r.status_code in (200, 202), r.text
        counts = r.json()["counts"]
        assert counts["persons"] == 1 and counts["distinct_ids"] == 1 and counts["events"] == n_events
        assert c.get(f"{P}/persons/{pid}/").status_code == 404
        assert c.get(f"{P}/events/", params={"distinct_id": victim}).json()["results"] == []
        r = c.post(f"{P}/query/", json={"query": {"kind": "HogQLQuery",
                                                  "query": f"SELECT count(*) FROM events WHERE distinct_id = '{victim}'"}})
        assert r.json()["results"] == [[0]]
        assert len(_all_pages(c, f"{P}/persons/", {"limit": 100})) == N_USERS - 1
        # unmerge/split say clearly that they are DuckDB-only for now
        r = c.post(f"{P}/persons/{pid}/unmerge/", json={"distinct_id": "nobody"})
        assert r.status_code in (400, 404) and r.json()["detail"]

        # retention: everything older than 1 day goes (the pageviews and identifies are 2-3 days old)
        before = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        total = c.post(f"{P}/query/", json={"query": {"kind": "HogQLQuery",
                                                      "query": "SELECT count(*) FROM events"}}).json()["results"][0][0]
        old = c.post(f"{P}/query/", json={"query": {"kind": "HogQLQuery", "query":
                     f"SELECT count(*) FROM events WHERE timestamp < TIMESTAMP '{before[:-1]}'"}}).json()["results"][0][0]
        assert 0 < old < total
        dry = c.post(f"{P}/prune/", params={"before": before, "dry_run": "true"})
        assert dry.status_code == 200, dry.text
        assert dry.json()["events"] == old and dry.json()["dry_run"]
        r = c.post(f"{P}/prune/", params={"before": before})
        assert r.status_code == 200, r.text
        assert r.json()["events"] == old
        left = c.post(f"{P}/query/", json={"query": {"kind": "HogQLQuery",
                                                     "query": "SELECT count(*) FROM events"}}).json()["results"][0][0]
        assert left == total - old
        assert _all_pages(c, f"{P}/events/", {"event": "$pageview"}) == []
