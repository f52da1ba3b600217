"""The web app in a real headless Chromium against a live server with demo data: sign in, the
default dashboard, build a trend and a funnel, check the charts' numbers, save them, put them on a
dashboard, reload the insight URL, sign out.

Chromium comes from the OS (`apt-get install -y chromium`), Playwright from the dev extras.
`SIGHTLINE_SCREENSHOTS=1` also writes the screenshots in docs/screenshots/ (1280x800).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from browserkit import CHROMIUM, CHROMIUM_ARGS, missing
from click.testing import CliRunner
from livesrv import ROOT, start_server, stop_server
from uikit import LOW_CONTRAST, shot, unlabeled_controls

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

EMAIL, PASSWORD = "pm@example.com", "insightful password"
P = "/api/projects/@current/"
SAVED_INSIGHT = re.compile(r".*/insights/\d+$")


def _prerequisites():
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package is not installed (pip install -e .[dev])")
    return sync_playwright


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("ui-demo") / "data"
    subprocess.run([sys.executable, "-m", "sightline.cli", "demo", "--data-dir", str(data), "--events", "20000",
                    "--no-progress"], check=True, cwd=ROOT, capture_output=True)
    from sightline.cli import main

    r = CliRunner().invoke(main, ["users", "create", "--data-dir", str(data), "--email", EMAIL, "--password", PASSWORD])
    assert r.exit_code == 0, r.output
    server = start_server(data)
    yield server
    stop_server(server)


def plot_data(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelector('#insight-chart .js-plotly-plot').data]
        .map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])}))""")


def drawn_query(page, must_contain: str) -> dict:
    """Wait until the explorer has drawn a query containing ``must_contain``; return that query."""
    page.wait_for_function(
        """(needle) => { const c = document.querySelector('#insight-chart');
             return c && c.dataset.ready === 'true' && !c.hasAttribute('aria-busy')
                    && (c.dataset.query || '').includes(needle)
                    && c.querySelector('.js-plotly-plot'); }""", arg=must_contain, timeout=20_000)
    return json.loads(page.get_attribute("#insight-chart", "data-query"))






def test_sign_in_build_save_and_reload_insights(demo_server):
    sync_playwright = _prerequisites()
    server = demo_server
    api = server.api()
    overview = next(d for d in api.get(P + "dashboards/").json()["results"] if d["name"] == "Product overview")
    outside: list[str] = []
    errors: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.on("request", lambda req: outside.append(req.url)
                    if not req.url.startswith((server.url, "data:", "blob:")) else None)
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

            # -- sign in: any page sends a signed-out visitor to /login and back afterwards
            page.goto(server.url + "/")
            page.wait_for_url("**/login**")
            page.keyboard.press("Tab")  # keyboard users reach the form first
            shot(page, "login")
            page.get_by_label("Email").fill(EMAIL)
            page.get_by_label("Password").fill("not the password")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("alert").filter(has_text="Wrong email or password").wait_for()
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_label("Password").press("Enter")
            page.wait_for_url(f"**/dashboard/{overview['id']}")

            # -- the default dashboard: every tile draws
            tiles = page.locator("#tiles .tile")
            tiles.first.wait_for()
            n_tiles = tiles.count()
            assert n_tiles == 6
            page.wait_for_function(f"document.querySelectorAll('#tiles .chart[data-ready=\"true\"]').length === {n_tiles}",
                                   timeout=30_000)
            assert page.locator("#tiles .chart .error").count() == 0
            assert not page.evaluate(LOW_CONTRAST), page.evaluate(LOW_CONTRAST)
            shot(page, "dashboard")

            # -- a trend: signed_up per day over the last 7 days
            page.get_by_role("link", name="Insights").click()
            page.wait_for_url("**/insights")
            page.get_by_role("link", name="New insight").first.click()
            page.wait_for_url("**/insights/new?q=*")
            drawn_query(page, "$pageview")
            event = page.get_by_label("Series A event")
            event.fill("signed_up")
            event.press("Tab")
            page.select_option("#date-range", "-7d")
            trend = drawn_query(page, '"date_from":"-7d"')
            assert trend["series"][0]["event"] == "signed_up"
            # the URL carries the query that is drawn
            assert json.loads(parse_qs(urlsplit(page.url).query)["q"][0]) == trend
            drawn = plot_data(page)
            result = api.post(P + "query/", json={"query": trend}).json()["results"]
            assert [t["y"] for t in drawn] == [r["data"] for r in result]
            assert [t["x"] for t in drawn] == [r["days"] for r in result]
            # ... and the numbers are the signed_up events of those days, counted here in Python
            days = result[0]["days"]
            start = datetime.fromisoformat(days[0]).replace(tzinfo=UTC)
            stored = server.events(event="signed_up", after=start.isoformat())
            per_day = Counter(datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
                              .astimezone(UTC).date().isoformat() for e in stored)
            assert drawn[0]["y"] == [per_day.get(d, 0) for d in days]
            assert sum(drawn[0]["y"]) > 0
            assert not unlabeled_controls(page), unlabeled_controls(page)
            assert not page.evaluate(LOW_CONTRAST), page.evaluate(LOW_CONTRAST)

            page.get_by_label("Insight name").fill("Sign-ups per day")
            page.get_by_role("button", name="Save insight").click()
            page.wait_for_url(SAVED_INSIGHT)
            trend_id = int(urlsplit(page.url).path.rstrip("/").split("/")[-1])
            saved = api.get(P + f"insights/{trend_id}/").json()
            assert saved["name"] == "Sign-ups per day" and saved["query"] == trend
            drawn_query(page, "signed_up")
            page.locator(".toast").first.wait_for(state="detached", timeout=10_000)
            shot(page, "insight-trends")
            page.select_option("#add-to-dashboard", str(overview["id"]))
            page.get_by_text("Added to Product overview").wait_for()
            assert api.get(P + f"insights/{trend_id}/").json()["dashboards"] == [overview["id"]]

            # -- a funnel: $pageview → signed_up → purchase
            page.goto(server.url + "/insights/new")
            drawn_query(page, "TrendsQuery")
            page.get_by_role("tab", name="Trends").focus()  # the kind tabs follow the arrow keys
            page.keyboard.press("ArrowRight")
            drawn_query(page, "FunnelsQuery")
            assert page.evaluate("document.activeElement.textContent") == "Funnels"
            assert page.get_by_role("tab", name="Funnels").get_attribute("aria-selected") == "true"
            page.get_by_role("button", name="+ Add step").click()
            page.get_by_label("Step 3 event").fill("purchase")
            page.get_by_label("Step 3 event").press("Tab")
            funnel = drawn_query(page, '"event":"purchase"')
            assert [s["event"] for s in funnel["series"]] == ["$pageview", "signed_up", "purchase"]
            steps = api.post(P + "query/", json={"query": funnel}).json()["results"]
            [bars] = plot_data(page)
            assert bars["y"] == [s["count"] for s in steps]
            assert steps[0]["count"] > steps[1]["count"] > 0
            conversion = page.locator(".funnel-table tbody tr").nth(1).locator("td").nth(1).inner_text()
            assert conversion == f"{100 * steps[1]['count'] / steps[0]['count']:.1f}%"
            page.get_by_label("Insight name").fill("Visit to purchase")
            page.get_by_role("button", name="Save insight").click()
            page.wait_for_url(SAVED_INSIGHT)
            funnel_url = page.url
            funnel_id = int(urlsplit(funnel_url).path.rstrip("/").split("/")[-1])
            drawn_query(page, "FunnelsQuery")
            shot(page, "insight-funnel")

            # -- the insight URL reproduces it after a reload
            page.reload()
            assert drawn_query(page, "FunnelsQuery") == funnel
            assert plot_data(page)[0]["y"] == bars["y"]
            assert page.get_by_label("Insight name").input_value() == "Visit to purchase"

            # -- the dashboard shows the saved trend; the funnel joins it from the API
            api.patch(P + f"insights/{funnel_id}/", json={"dashboards": [overview["id"]]})
            page.goto(server.url + f"/dashboard/{overview['id']}")
            page.wait_for_function("document.querySelectorAll('#tiles .chart[data-ready=\"true\"]').length === 8",
                                   timeout=30_000)
            names = page.locator("#tiles .tile h2").all_inner_texts()
            assert "Sign-ups per day" in names and "Visit to purchase" in names

            # -- other pages used for the docs
            retention = next(t for t in api.get(P + f"dashboards/{overview['id']}/").json()["tiles"]
                             if t["insight"]["query"]["kind"] == "RetentionQuery")
            page.goto(server.url + f"/insights/{retention['insight']['id']}")
            page.locator("#insight-chart .heat").wait_for()
            shot(page, "insight-retention")
            page.goto(server.url + "/insights/new?q=" + json.dumps({"kind": "PathsQuery", "dateRange": {"date_from": "-7d"}}))
            drawn_query(page, "PathsQuery")
            shot(page, "insight-paths")

            # -- sign out: the session is gone
            page.get_by_role("button", name="Log out").click()
            page.wait_for_url("**/login**")
            me = page.evaluate("fetch('/api/auth/me').then(r => r.json())")
            assert me["user"] is None
        finally:
            browser.close()
            api.close()

    assert not outside, f"requests outside Sightline: {outside}"
    assert not [e for e in errors if "401" not in e], errors  # 401s: the wrong-password attempt
