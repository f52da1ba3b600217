"""The web app's Live events, Persons, Feature flags, Experiments and Set-up pages in a real
headless Chromium against a live server with demo data (`sightline demo --events 20000`): what
the pages show is checked against the JSON API, and what they create against the API and `/flags`.

`SIGHTLINE_SCREENSHOTS=1` also writes docs/screenshots/{events,person,flags,experiment,setup}.png
(1280x800).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import httpx
import pytest
from browserkit import CHROMIUM, CHROMIUM_ARGS, missing
from click.testing import CliRunner
from livesrv import ROOT, start_server, stop_server
from uikit import LOW_CONTRAST, shot, unlabeled_controls

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

EMAIL, PASSWORD = "ops@example.com", "pages password 1"
P = "/api/projects/@current/"






@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package is not installed (pip install -e .[dev])")
    data = tmp_path_factory.mktemp("ui-pages") / "data"
    subprocess.run([sys.executable, "-m", "sightline.cli", "demo", "--data-dir", str(data), "--events", "20000",
                    "--no-progress"], check=True, cwd=ROOT, capture_output=True)
    from sightline.cli import main

    r = CliRunner().invoke(main, ["users", "create", "--data-dir", str(data), "--email", EMAIL, "--password", PASSWORD])
    assert r.exit_code == 0, r.output
    server = start_server(data)
    outside: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.on("request", lambda req: outside.append(req.url)
                if not req.url.startswith((server.url, "data:", "blob:")) else None)
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.goto(server.url + "/events")
        page.wait_for_url("**/login**")
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_label("Password").press("Enter")
        page.wait_for_url("**/events")
        page.api = server.api()
        yield server, page
        page.api.close()
        browser.close()
    stop_server(server)
    assert outside == [], f"requests left the server: {outside}"
    # the flag test's deliberate duplicate key is a 400 shown inline; anything else is a bug
    assert [e for e in errors if "status of 400" not in e] == [], errors


def _rows(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('#events-table tr.event-row')].map(tr => ({
        uuid: tr.dataset.uuid, event: tr.dataset.event, browser: tr.children[5].textContent}))""")


def _wait_rows(page, predicate_js: str, timeout: int = 15_000) -> list[dict]:
    page.wait_for_function(f"""() => {{ const rows = [...document.querySelectorAll('#events-table tr.event-row')];
        return !document.querySelector('#events-table tbody[aria-busy]') && ({predicate_js}); }}""", timeout=timeout)
    return _rows(page)


def test_live_events_filter_expand_and_refresh(ui):
    server, page = ui
    page.goto(server.url + "/events")
    rows = _wait_rows(page, "rows.length > 0")
    api_all = page.api.get(P + "live_events/").json()["results"]
    assert [r["uuid"] for r in rows] == [e["uuid"] for e in api_all]  # the newest 100, newest first
    assert len({r["event"] for r in rows}) > 1
    assert unlabeled_controls(page, "main") == []
    assert page.evaluate(LOW_CONTRAST) == []

    # filter by event name: every row is a $pageview, and the same rows as the API
    event = page.get_by_label("Event", exact=True)
    event.fill("$pageview")
    event.press("Enter")
    rows = _wait_rows(page, "rows.length > 0 && rows.every(r => r.dataset.event === '$pageview')")
    api_pv = page.api.get(P + "live_events/", params={"event": "$pageview"}).json()["results"]
    assert [r["uuid"] for r in rows] == [e["uuid"] for e in api_pv]
    assert "event=%24pageview" in page.url or "event=$pageview" in page.url

    # and by a property: $browser = Safari narrows it further
    page.get_by_role("button", name="+ Property filter").click()
    page.get_by_label("Filter 1 property").fill("$browser")
    page.get_by_label("Filter 1 value").fill("Safari")
    rows = _wait_rows(page, "rows.length > 0 && rows.every(r => r.children[5].textContent === 'Safari')")
    props = json.dumps([{"key": "$browser", "operator": "exact", "type": "event", "value": "Safari"}])
    api_safari = page.api.get(P + "live_events/", params={"event": "$pageview", "properties": props}).json()["results"]
    assert [r["uuid"] for r in rows] == [e["uuid"] for e in api_safari]
    assert len(api_safari) < len(api_pv) or len(api_pv) == 100

    # a row opens to its properties JSON
    page.locator("#events-table tr.event-row td.event-name").first.click()  # (not the person link)
    detail = page.locator("#events-table tr.detail-row pre").first
    shown = json.loads(detail.inner_text())
    assert shown["uuid"] == rows[0]["uuid"] and shown["properties"]["$browser"] == "Safari"
    shot(page, "events")

    # live: an event captured now appears without a reload; paused, it does not
    name = f"ui-live-{uuid.uuid4().hex[:6]}"
    page.get_by_role("button", name="Remove filter 1").click()
    event.fill(name)
    event.press("Enter")
    page.wait_for_function("() => document.querySelector('#events-table .empty')")
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": [
        {"event": name, "distinct_id": "live-1", "properties": {"$browser": "Firefox", "$current_url": "https://x.test/a"}}]})
    assert r.status_code == 200
    rows = _wait_rows(page, f"rows.length === 1 && rows[0].dataset.event === '{name}'")
    assert rows[0]["browser"] == "Firefox"
    page.get_by_role("button", name="Pause").click()
    assert page.get_by_role("button", name="Resume").get_attribute("aria-pressed") == "true"
    httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": [{"event": name, "distinct_id": "live-2"}]})
    page.wait_for_timeout(4000)  # longer than one refresh period
    assert len(_rows(page)) == 1
    page.get_by_role("button", name="Resume").click()
    _wait_rows(page, "rows.length === 2")


def test_person_search_properties_and_timeline(ui):
    server, page = ui
    people = page.api.get(P + "persons/", params={"search": "@", "limit": 50}).json()["results"]
    person = max((p for p in people if p["properties"].get("email")), key=lambda p: len(p["distinct_ids"]))
    email = person["properties"]["email"]
    page.goto(server.url + "/persons")
    page.locator("#persons-table tr.person-row").first.wait_for()
    page.get_by_label("Search", exact=True).fill(email)
    link = page.locator("#persons-table tr.person-row a", has_text=person["properties"].get("name") or email)
    # The person may already be on the unfiltered first page: wait for the filtered list itself.
    wanted = len(page.api.get(P + "persons/", params={"search": email}).json()["results"])
    assert wanted >= 1
    page.wait_for_function(
        f"document.querySelectorAll('#persons-table tr.person-row').length === {wanted}", timeout=10000)
    link.wait_for()
    link.click()
    page.wait_for_url(f"**/persons/{person['id']}")
    page.locator("#person-timeline li").first.wait_for()

    cells = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#person-properties tbody tr')]
        .map(tr => [tr.children[0].textContent, tr.children[1].textContent]))""")
    expect = {k: (json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else
                  ("true" if v is True else "false" if v is False else str(v))) for k, v in person["properties"].items()}
    assert cells == expect
    ids = page.locator("#person-distinct-ids li").all_inner_texts()
    assert sorted(ids) == sorted(person["distinct_ids"])

    api_events = server.events(person_id=person["id"])
    shown = page.locator("#person-timeline li strong").all_inner_texts()
    assert shown == [e["event"] for e in api_events[:50]]
    shot(page, "person")
    if len(api_events) > 50:
        page.get_by_role("button", name="Load more").click()
        page.wait_for_function(f"document.querySelectorAll('#person-timeline li').length === {min(100, len(api_events))}")
    assert unlabeled_controls(page, "main") == []
    assert page.evaluate(LOW_CONTRAST) == []


def _flags_for(server, distinct_id: str, **person_properties) -> dict:
    r = httpx.post(server.url + "/flags/?v=2", json={"api_key": server.token, "distinct_id": distinct_id,
                                                     "person_properties": person_properties})
    assert r.status_code == 200, r.text
    return r.json()["flags"]


def test_create_edit_and_toggle_a_flag(ui):
    server, page = ui
    key = f"ui-flag-{uuid.uuid4().hex[:6]}"
    page.goto(server.url + "/feature_flags")
    page.get_by_role("link", name="New feature flag").click()
    page.wait_for_url("**/feature_flags/new")
    page.get_by_label("Key", exact=True).fill(key)
    page.get_by_label("Name / description").fill("Made in the browser")
    page.get_by_role("button", name="+ Variant").click()
    page.get_by_role("button", name="+ Variant").click()
    assert page.locator("#variant-sum").inner_text().startswith("Split: 100%")
    page.get_by_label("Variant 2 percentage").fill("60")
    assert "must add up" in page.locator("#variant-sum").inner_text()
    page.get_by_role("button", name="Create flag").click()
    assert "not 100%" in page.locator("#flag-error").inner_text()   # checked before sending
    page.get_by_label("Variant 2 percentage").fill("50")
    page.get_by_label("Payload for test").fill('{"color": "green"}')
    page.get_by_label("Condition set 1 rollout percentage").fill("100")
    page.get_by_role("button", name="+ Property condition").click()
    page.get_by_label("Filter 1 property").fill("email")
    page.get_by_label("Filter 1 operator").select_option("icontains")
    page.get_by_label("Filter 1 value").fill("@acme.test")
    page.get_by_label("Filter 1 value").press("Tab")
    # an API error (an existing key) is shown inline, nothing is created
    page.get_by_label("Key", exact=True).fill("new-checkout")
    page.get_by_role("button", name="Create flag").click()
    page.locator("#flag-error").filter(has_text="already a feature flag").wait_for()
    page.get_by_label("Key", exact=True).fill(key)
    page.get_by_role("button", name="Create flag").click()
    page.wait_for_url(re.compile(r".*/feature_flags/\d+$"))
    page.locator("#flag-sdk pre").first.wait_for()

    flag = next(f for f in page.api.get(P + "feature_flags/").json()["results"] if f["key"] == key)
    assert flag["name"] == "Made in the browser" and flag["active"] is True
    assert [(v["key"], v["rollout_percentage"]) for v in flag["filters"]["multivariate"]["variants"]] == [("control", 50), ("test", 50)]
    assert json.loads(flag["filters"]["payloads"]["test"]) == {"color": "green"}
    snippet = page.locator("#code-flag-js").inner_text()
    assert f"getFeatureFlag('{key}')" in snippet and server.token in snippet and server.url in snippet
    page.get_by_role("tab", name="posthog-python").click()
    assert f"get_feature_flag('{key}', 'user-42')" in page.locator("#code-flag-python").inner_text()

    assert flag["filters"]["groups"] == [{"properties": [{"key": "email", "operator": "icontains", "value": "@acme.test",
                                                          "type": "person"}], "rollout_percentage": 100, "variant": None}]
    assert _flags_for(server, "eve", email="eve@elsewhere.test")[key]["enabled"] is False
    got = {d: _flags_for(server, d, email=f"{d}@acme.test")[key] for d in ("ada", "bob", "cyd", "dan")}
    assert all(f["enabled"] and f["variant"] in ("control", "test") for f in got.values())
    assert {f["variant"] for f in got.values()} <= {"control", "test"}
    test_user = next((d for d, f in got.items() if f["variant"] == "test"), None)
    if test_user:
        assert json.loads(got[test_user]["metadata"]["payload"]) == {"color": "green"}
    assert page.locator("#flag-activity li").first.inner_text().startswith(f"created v1 by user {EMAIL}")
    assert flag["created_by"] == f"user {EMAIL}"
    assert unlabeled_controls(page, "main") == []
    assert page.evaluate(LOW_CONTRAST) == []
    shot(page, "flags")

    # the list's switch turns it off for everyone
    page.get_by_role("link", name="← Feature flags").click()
    switch = page.get_by_label(f"{key} active")
    assert switch.is_checked()
    switch.click()
    page.wait_for_function(f"""async () => (await (await fetch('{P}feature_flags/{flag['id']}/')).json()).active === false""")
    assert not switch.is_checked()
    assert _flags_for(server, "ada", email="ada@acme.test")[key]["enabled"] is False
    row = page.locator(f"#flags-table tr[data-key='{key}'] .rollout").inner_text()
    assert row == "1 condition set · control 50% / test 50%"


def test_create_an_experiment_and_read_the_demo_results(ui):
    server, page = ui
    name = f"UI experiment {uuid.uuid4().hex[:6]}"
    flag_key = f"ui-exp-{uuid.uuid4().hex[:6]}"
    page.goto(server.url + "/experiments")
    page.get_by_role("link", name="New experiment").click()
    page.get_by_label("Name", exact=True).first.fill(name)
    page.get_by_label("Hypothesis").fill("Shorter forms convert better.")
    page.get_by_label("Feature flag key").fill(flag_key)
    goal = page.locator("fieldset.metric").first
    goal.get_by_label("Event", exact=True).fill("signed_up")
    goal.get_by_label("Within (after exposure)").fill("7")
    page.get_by_role("button", name="+ Secondary metric").click()
    second = page.locator("fieldset.metric").nth(1)
    second.get_by_label("Metric", exact=True).select_option("mean")
    second.get_by_label("Event", exact=True).fill("purchase")
    second.get_by_label("Numeric property").fill("revenue")
    page.get_by_label("Launch now").check()
    assert unlabeled_controls(page, "main") == []
    assert page.evaluate(LOW_CONTRAST) == []
    page.get_by_role("button", name="Create experiment").click()
    page.wait_for_url(re.compile(r".*/experiments/\d+$"))
    page.locator("#recommendation").wait_for()
    exp = next(e for e in page.api.get(P + "experiments/").json()["results"] if e["name"] == name)
    assert exp["status"] == "running" and exp["feature_flag_key"] == flag_key
    assert exp["hypothesis"] == "Shorter forms convert better."
    assert exp["created_by"] == f"user {EMAIL}"
    m = exp["metrics"][0]
    assert (m["metric_type"], m["series"][0]["event"], m["conversion_window"], m["conversion_window_unit"]) == ("funnel", "signed_up", 7, "day")
    s = exp["metrics_secondary"][0]
    assert (s["metric_type"], s["source"]["math"], s["source"]["math_property"]) == ("mean", "sum", "revenue")
    assert _flags_for(server, "anyone")[flag_key]["variant"] in ("control", "test")
    # edit it: the new hypothesis is stored
    page.get_by_role("button", name="Edit").click()
    page.locator("#experiment-edit").get_by_label("Hypothesis").fill("Shorter forms convert 10% better.")
    page.locator("#experiment-edit").get_by_role("button", name="Save").click()
    page.get_by_text("Hypothesis: Shorter forms convert 10% better.").wait_for()
    assert page.api.get(P + f"experiments/{exp['id']}/").json()["hypothesis"] == "Shorter forms convert 10% better."

    # the demo's "New checkout": the page's numbers are the results API's
    demo = next(e for e in page.api.get(P + "experiments/").json()["results"] if e["name"] == "New checkout")
    page.get_by_role("link", name="← Experiments").click()
    page.get_by_role("link", name="New checkout").click()
    page.wait_for_url(f"**/experiments/{demo['id']}")
    page.wait_for_function("() => document.querySelector('#lift-chart')?.dataset.ready === 'true'"
                           " && document.querySelector('#cumulative-chart')?.dataset.ready === 'true'", timeout=20_000)
    res = page.api.get(P + f"experiments/{demo['id']}/results/").json()
    shown = page.evaluate("""() => [...document.querySelectorAll('table.variant-table')].map(t => ({
        name: t.dataset.metricName,
        rows: [...t.querySelectorAll('tbody tr')].map(tr => Object.fromEntries([['key', tr.dataset.variant],
            ...[...tr.querySelectorAll('td[data-field]')].map(td => [td.dataset.field, td.dataset.value])]))}))""")
    assert [t["name"] for t in shown] == [m["name"] for m in res["metrics"]]
    for table, metric in zip(shown, res["metrics"]):
        for row, v in zip(table["rows"], metric["variants"], strict=True):
            assert row["key"] == v["key"]
            assert int(row["exposures"]) == v["exposures"] == res["exposures"][v["key"]]
            assert float(row["value"]) == pytest.approx(v["value"])
            if v["key"] != "control":
                assert float(row["lift"]) == pytest.approx(v["lift"])
                assert [float(x) for x in row["interval"].split(",")] == pytest.approx(v["lift_interval"])
                assert float(row["chance_to_win"]) == pytest.approx(v["chance_to_win"])
                assert row["significant"] == str(v["significant"]).lower()
    # SRM: the banner when there is a mismatch, else the passed check; the recommendation and its reason
    if res["srm"]["mismatch"]:
        assert res["srm"]["warning"] in page.locator("#srm-warning").inner_text()
    else:
        assert page.locator("#srm-ok").inner_text().startswith("Sample ratio check passed")
        assert page.locator("#srm-warning").count() == 0
    assert page.locator("#recommendation").get_attribute("data-action") == res["recommendation"]["action"]
    assert page.locator("#recommendation .rec-reason").inner_text() == res["recommendation"]["reason"]
    goal_row = res["metrics"][0]["variants"][1]
    verdict = page.locator("#goal-verdict").inner_text()
    assert verdict.startswith("Purchase conversion:") and ("better" in verdict) == (goal_row["lift"] > 0)
    # the lift chart: one point per metric and variant, error bars from the intervals, a zero line
    trace = page.evaluate("() => { const d = document.querySelector('#lift-chart .js-plotly-plot');"
                          " return {x: Array.from(d.data[0].x), plus: Array.from(d.data[0].error_x.array),"
                          " shapes: d.layout.shapes.map(s => s.x0)}; }")
    lifts = [v for m in res["metrics"] for v in m["variants"] if v["key"] != "control"]
    assert trace["x"] == pytest.approx([v["lift"] * 100 for v in lifts])
    assert trace["plus"] == pytest.approx([(v["lift_interval"][1] - v["lift"]) * 100 for v in lifts])
    assert trace["shapes"] == [0]
    assert page.get_by_role("button", name="Stop").is_visible() and page.get_by_role("button", name="Ship variant").is_visible()
    assert page.evaluate(LOW_CONTRAST) == []
    shot(page, "experiment")


def test_setup_page_snippets_and_first_event(ui):
    server, page = ui
    page.goto(server.url + "/settings")
    status = page.locator("#first-event-status")
    status.wait_for()
    assert page.locator("#project-token").inner_text() == server.token
    assert page.locator("#api-host").inner_text() == server.url
    npm = page.locator("#code-js-npm").inner_text()
    assert f"posthog.init('{server.token}'" in npm and f"api_host: '{server.url}'" in npm
    for tab, code in [("posthog-python", "#code-python"), ("posthog-node", "#code-node")]:
        page.get_by_role("tab", name=tab).click()
        text = page.locator(code).inner_text()
        assert server.token in text and server.url in text
    page.get_by_role("tab", name="posthog-js (npm)").click()
    assert status.get_attribute("data-state") == "waiting"
    page.wait_for_timeout(2500)  # one poll with nothing new: still waiting (the demo's events are older)
    assert status.get_attribute("data-state") == "waiting"
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": [
        {"event": "my_first_event", "distinct_id": "setup-check"}]})
    assert r.status_code == 200
    page.wait_for_function("() => document.querySelector('#first-event-status').dataset.state === 'received'", timeout=15_000)
    assert "my_first_event" in status.inner_text() and "setup-check" in status.inner_text()
    assert unlabeled_controls(page, "main") == []
    assert page.evaluate(LOW_CONTRAST) == []
    shot(page, "setup")


def test_keyboard_reaches_the_main_controls(ui):
    server, page = ui
    page.goto(server.url + "/events")
    page.locator("#events-table tr.event-row").first.wait_for()
    page.locator("body").focus()
    seen = []
    for _ in range(30):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("() => { const a = document.activeElement;"
                                  " return a.id || a.getAttribute('aria-label') || a.textContent.trim().slice(0, 40); }"))
    for control in ("Skip to content", "Live events", "event-filter", "add-property-filter", "pause-live"):
        assert control in seen, (control, seen)
    assert any(s.startswith("Properties of ") for s in seen)  # the rows' disclosure buttons
    # Enter on a row's button opens it; Space on Pause pauses
    page.locator("#events-table .row-toggle").first.focus()
    page.keyboard.press("Enter")
    page.locator("#events-table tr.detail-row").first.wait_for()
    assert page.locator("#events-table .row-toggle").first.get_attribute("aria-expanded") == "true"
    page.locator("#pause-live").focus()
    page.keyboard.press("Space")
    assert page.locator("#pause-live").get_attribute("aria-pressed") == "true"
