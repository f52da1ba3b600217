"""The web app's JSON API against a live server: autocomplete (checked against the events we sent),
saved insights and dashboards CRUD, the default dashboard, static assets and the SPA fallback."""

from __future__ import annotations

import gzip
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from livesrv import start_server, stop_server

P = "/api/projects/@current/"
NOW = datetime.now(timezone.utc)
BROWSERS = ["Chrome", "Firefox", "Chrome", "Safari", "Chrome", "Firefox", "Edge"]


def _events() -> list[dict]:
    out = []
    for i, browser in enumerate(BROWSERS):
        did = f"ui-api-{i}"
        ts = (NOW - timedelta(hours=i + 1)).isoformat()
        out.append({"event": "$pageview", "distinct_id": did, "timestamp": ts,
                    "properties": {"$browser": browser, "$pathname": f"/page/{i % 3}", "weird/key~": i}})
        if i % 2 == 0:
            out.append({"event": "signed_up", "distinct_id": did, "timestamp": ts,
                        "properties": {"plan": "pro" if i % 4 == 0 else "free", "seats": i,
                                       "$set": {"company": f"co-{i % 3}", "tier": "gold"}}})
    return out


EVENTS = _events()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("ui-api") / "data")
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": EVENTS}, timeout=30)
    assert r.status_code == 200, r.text
    yield server
    stop_server(server)


@pytest.fixture
def api(srv):
    with srv.api() as c:
        yield c


def test_event_definitions_count_every_event_name(api):
    r = api.get(P + "event_definitions/")
    assert r.status_code == 200, r.text
    got = {e["name"]: e["volume"] for e in r.json()["results"]}
    assert got == dict(Counter(e["event"] for e in EVENTS))
    names = [e["name"] for e in r.json()["results"]]
    assert names == sorted(names, key=lambda n: -got[n])  # most frequent first
    found = api.get(P + "event_definitions/", params={"search": "SIGN"}).json()
    assert [e["name"] for e in found["results"]] == ["signed_up"]
    assert api.get(P + "event_definitions/", params={"limit": "0"}).status_code == 400


def test_property_definitions_per_event_and_for_persons(api):
    r = api.get(P + "property_definitions/", params={"event_names": "signed_up"})
    assert r.status_code == 200, r.text
    props = {p["name"]: p for p in r.json()["results"]}
    assert {"plan", "seats"} <= set(props) and "$browser" not in props
    n_signups = sum(e["event"] == "signed_up" for e in EVENTS)
    assert props["plan"]["count"] == n_signups
    assert props["seats"]["is_numerical"] and props["plan"]["property_type"] == "String"
    pv = {p["name"] for p in api.get(P + "property_definitions/", params={"event_names": "$pageview"}).json()["results"]}
    assert {"$browser", "$pathname", "weird/key~"} <= pv and "plan" not in pv
    persons = api.get(P + "property_definitions/", params={"type": "person"}).json()["results"]
    assert {"company", "tier"} <= {p["name"] for p in persons}
    assert api.get(P + "property_definitions/", params={"type": "group"}).status_code == 400


def test_property_values_are_the_most_frequent_first(api):
    r = api.get(P + "property_values/", params={"key": "$browser"})
    assert r.status_code == 200, r.text
    expected = Counter(BROWSERS)
    assert {v["name"]: v["count"] for v in r.json()} == dict(expected)
    assert r.json()[0] == {"name": "Chrome", "count": 3}
    r = api.get(P + "property_values/", params={"key": "$browser", "value": "fire"})
    assert r.json() == [{"name": "Firefox", "count": 2}]
    # a property name that is not a plain identifier is a bound JSON pointer, not SQL
    r = api.get(P + "property_values/", params={"key": "weird/key~", "event_name": "$pageview"})
    assert sorted(int(v["name"]) for v in r.json()) == list(range(len(BROWSERS)))
    r = api.get(P + "property_values/", params={"key": "plan", "event_name": "signed_up"})
    assert {v["name"]: v["count"] for v in r.json()} == dict(
        Counter(e["properties"]["plan"] for e in EVENTS if e["event"] == "signed_up"))
    r = api.get(P + "property_values/", params={"key": "company", "type": "person"})
    persons = {e["distinct_id"]: e["properties"]["$set"]["company"] for e in EVENTS if "$set" in e["properties"]}
    assert {v["name"]: v["count"] for v in r.json()} == dict(Counter(persons.values()))
    assert api.get(P + "property_values/").status_code == 400
    assert api.get(P + "property_values/", params={"key": "x", "limit": "9999"}).status_code == 400


TREND = {"kind": "TrendsQuery", "series": [{"kind": "EventsNode", "event": "signed_up", "math": "total"}],
         "dateRange": {"date_from": "-7d"}}


def test_insights_crud(api):
    r = api.post(P + "insights/", json={"name": "Weekly zebra sign-ups", "query": TREND, "description": "weekly"})
    assert r.status_code == 201, r.text
    ins = r.json()
    assert ins["name"] == "Weekly zebra sign-ups" and ins["query"] == TREND and ins["dashboards"] == [] and ins["short_id"]
    iid = ins["id"]
    assert api.get(P + f"insights/{iid}/").json()["query"] == TREND
    # PostHog's wrapper is accepted and unwrapped
    r = api.post(P + "insights/", json={"name": "wrapped", "query": {"kind": "InsightVizNode", "source": TREND}})
    assert r.status_code == 201 and r.json()["query"] == TREND
    listed = api.get(P + "insights/", params={"search": "ZEBRA"}).json()
    assert [i["id"] for i in listed["results"]] == [iid] and listed["count"] == 1

    funnel = {"kind": "FunnelsQuery", "series": [{"event": "$pageview"}, {"event": "signed_up"}]}
    r = api.patch(P + f"insights/{iid}/", json={"name": "Renamed", "query": funnel})
    assert r.status_code == 200 and r.json()["name"] == "Renamed" and r.json()["query"] == funnel

    bad = api.post(P + "insights/", json={"name": "x", "query": {"kind": "TrendsQuery", "series": []}})
    assert bad.status_code == 400 and bad.json()["attr"] == "query"
    assert api.post(P + "insights/", json={"name": "x", "query": {"kind": "Nope"}}).status_code == 400
    assert api.post(P + "insights/", json={"name": "x", "query": TREND, "color": "red"}).json()["attr"] == "color"
    assert api.post(P + "insights/", json={"name": "x", "query": TREND, "dashboards": [99999]}).status_code == 400
    assert api.patch(P + f"insights/{iid}/", json={"name": ""}).status_code == 400
    assert api.post(P + "insights/", content=b"[1, 2]").status_code == 400

    assert api.delete(P + f"insights/{iid}/").status_code == 204
    assert api.get(P + f"insights/{iid}/").status_code == 404
    assert api.patch(P + f"insights/{iid}/", json={"name": "ghost"}).status_code == 404
    assert api.get(P + "insights/99999/").status_code == 404


def test_dashboards_tiles_follow_the_insights(api):
    d = api.post(P + "dashboards/", json={"name": "Growth", "filters": {"date_from": "-14d"}})
    assert d.status_code == 201, d.text
    did = d.json()["id"]
    assert d.json()["filters"] == {"date_from": "-14d"} and d.json()["tiles"] == []
    a = api.post(P + "insights/", json={"name": "A", "query": TREND, "dashboards": [did]}).json()
    b = api.post(P + "insights/", json={"name": "B", "query": TREND}).json()
    r = api.patch(P + f"insights/{b['id']}/", json={"dashboards": [did]})
    assert r.status_code == 200 and r.json()["dashboards"] == [did]
    tiles = api.get(P + f"dashboards/{did}/").json()["tiles"]
    assert [t["insight"]["name"] for t in tiles] == ["A", "B"]

    r = api.patch(P + f"dashboards/{did}/", json={"tiles": [b["id"], a["id"]], "name": "Growth 2"})
    assert r.status_code == 200, r.text
    assert [t["insight"]["name"] for t in r.json()["tiles"]] == ["B", "A"] and r.json()["name"] == "Growth 2"
    r = api.patch(P + f"dashboards/{did}/", json={"tiles": [a["id"]]})
    assert [t["insight"]["name"] for t in r.json()["tiles"]] == ["A"]
    assert api.get(P + f"insights/{b['id']}/").json()["dashboards"] == []

    assert api.patch(P + f"dashboards/{did}/", json={"filters": {"date_from": 7}}).status_code == 400
    assert api.patch(P + f"dashboards/{did}/", json={"filters": {"colour": "x"}}).status_code == 400
    assert api.patch(P + f"dashboards/{did}/", json={"tiles": [987654]}).status_code == 400
    assert api.post(P + "dashboards/", json={}).json()["attr"] == "name"
    # a deleted insight leaves its dashboards
    api.delete(P + f"insights/{a['id']}/")
    assert api.get(P + f"dashboards/{did}/").json()["tiles"] == []
    assert api.delete(P + f"dashboards/{did}/").status_code == 204
    assert api.get(P + f"dashboards/{did}/").status_code == 404
    assert did not in [x["id"] for x in api.get(P + "dashboards/").json()["results"]]


def test_the_default_dashboard_exists_once_and_every_tile_runs(api, srv):
    boards = api.get(P + "dashboards/").json()["results"]
    overview = [b for b in boards if b["name"] == "Product overview"]
    assert len(overview) == 1 and overview[0]["pinned"]
    tiles = api.get(P + f"dashboards/{overview[0]['id']}/").json()["tiles"]
    names = [t["insight"]["name"] for t in tiles]
    assert names[:4] == ["Daily active users", "Sign-ups last 7 days", "Sign-up funnel", "Retention after sign-up"]
    kinds = {t["insight"]["query"]["kind"] for t in tiles}
    assert {"TrendsQuery", "FunnelsQuery", "RetentionQuery"} <= kinds
    for t in tiles:
        r = api.post(P + "query/", json={"query": t["insight"]["query"]})
        assert r.status_code == 200, (t["insight"]["name"], r.text)
    signups = next(t for t in tiles if t["insight"]["name"] == "Sign-ups last 7 days")
    result = api.post(P + "query/", json={"query": signups["insight"]["query"]}).json()
    assert result["results"][0]["aggregated_value"] == sum(e["event"] == "signed_up" for e in EVENTS)


def test_deleting_the_default_dashboard_sticks_across_restarts(tmp_path):
    server = start_server(tmp_path / "data")
    try:
        with server.api() as c:
            [board] = c.get(P + "dashboards/").json()["results"]
            assert c.delete(P + f"dashboards/{board['id']}/").status_code == 204
    finally:
        stop_server(server)
    server = start_server(tmp_path / "data")
    try:
        with server.api() as c:
            assert c.get(P + "dashboards/").json()["results"] == []
    finally:
        stop_server(server)


def test_ui_paths_get_the_app_and_everything_else_keeps_its_json_404(srv):
    html = {"Accept": "text/html,application/xhtml+xml"}
    # no account yet: "/" starts the first-run setup
    assert httpx.get(srv.url + "/", headers=html).headers.get("location") == "/setup"
    for path in ("/login", "/insights/new", "/insights/12", "/dashboard/1", "/feature_flags", "/events"):
        r = httpx.get(srv.url + path, headers=html)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"], path
        assert "Content-Security-Policy" in r.headers and "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert httpx.get(srv.url + "/insights/new").status_code == 404  # not a browser: JSON 404
    assert httpx.get(srv.url + "/api/projects/@current/nope/", headers=html).status_code == 404
    r = httpx.post(srv.url + "/insights/new", headers=html)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert httpx.get(srv.url + "/favicon.ico", headers=html).status_code == 404


def test_static_assets_are_compressed_cached_and_confined(srv):
    r = httpx.get(srv.url + "/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.headers["content-type"].startswith("text/javascript") and "import" in r.text
    etag = r.headers["etag"]
    again = httpx.get(srv.url + "/static/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    raw = httpx.get(srv.url + "/static/app.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers and raw.text == r.text
    plotly = httpx.get(srv.url + "/static/vendor/plotly.min.js?v=1", headers={"Accept-Encoding": "gzip"})
    assert plotly.status_code == 200 and "immutable" in plotly.headers["cache-control"]
    assert int(plotly.headers["content-length"]) < len(plotly.content)  # gzip on the wire
    for bad in ("/static/../routes.py", "/static/%2e%2e/routes.py", "/static/nope.js", "/static/pages"):
        assert httpx.get(srv.url + bad).status_code == 404, bad


def test_every_page_module_in_the_route_table_exists(srv):
    import re

    table = httpx.get(srv.url + "/static/routes.js").text
    pages = set(re.findall(r"page: '([a-z_]+)'", table))
    assert {"login", "setup", "insight", "insights", "dashboard", "dashboards", "events", "persons",
            "feature_flags", "experiments", "settings"} <= pages
    for page in pages:
        assert httpx.get(srv.url + f"/static/pages/{page}.js").status_code == 200, page
