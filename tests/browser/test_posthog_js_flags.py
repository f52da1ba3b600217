"""Unmodified posthog-js in headless Chromium reads feature flags and payloads from Sightline.

The page is served from another 127.0.0.1 origin (so CORS applies). posthog-js boots from
`/array/<token>/config` (which says `hasFeatureFlags: true`), asks `/flags/?v=2`, and
`isFeatureEnabled` / `getFeatureFlag` / `getFeatureFlagPayload` must return what the server decided
for that distinct id; the `$feature_flag_called` events they send must be stored.

Missing prerequisites skip the test, unless SIGHTLINE_REQUIRE_BROWSER=1 (CI), which makes them fail.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
POSTHOG_BUNDLE = HERE / "node_modules" / "posthog-js" / "dist" / "array.full.js"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FLAGS = [
    {"key": "js-bool", "filters": {"groups": [{"properties": [], "rollout_percentage": 100}],
                                   "payloads": {"true": {"headline": "Hello from Sightline", "n": 3}}}},
    {"key": "js-variant", "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50},
                                      {"key": "test", "rollout_percentage": 50}]},
        "payloads": {"control": {"color": "blue"}, "test": {"color": "red"}}}},
    {"key": "js-off", "filters": {"groups": [{"properties": [], "rollout_percentage": 0}]}},
    {"key": "js-pro-only", "filters": {"groups": [
        {"properties": [{"key": "plan", "value": "pro", "type": "person"}], "rollout_percentage": 100}]}},
]

PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sightline flags test</title>
<script src="/array.full.js"></script></head>
<body><script>
  window.__flagLoads = [];
  window.__loaded = new Promise(function (resolve) {
    posthog.init(__TOKEN__, {
      api_host: __API_HOST__,
      opt_out_useragent_filter: true,
      loaded: function (ph) {
        ph.onFeatureFlags(function (flags, variants, ctx) {
          window.__flagLoads.push({flags: flags, variants: variants, errorsLoading: !!(ctx && ctx.errorsLoading)});
        });
        resolve(ph.get_distinct_id());
      }
    });
  });
</script></body></html>
"""


def _missing(reason: str) -> None:
    if os.environ.get("SIGHTLINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SIGHTLINE_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _require_prerequisites():
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    if not POSTHOG_BUNDLE.exists():
        _missing(f"{POSTHOG_BUNDLE} is missing (cd tests/browser && npm ci)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed (pip install -e .[dev])")
    return sync_playwright


class _StaticSite:
    def __init__(self, api_host: str, token: str):
        page = (PAGE_HTML.replace("__TOKEN__", json.dumps(token))
                .replace("__API_HOST__", json.dumps(api_host))).encode()
        files = {"/index.html": (page, "text/html; charset=utf-8"),
                 "/array.full.js": (POSTHOG_BUNDLE.read_bytes(), "application/javascript")}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = urlsplit(self.path).path
                if path not in files:
                    self.send_response(404 if path != "/favicon.ico" else 204)
                    self.end_headers()
                    return
                body, ctype = files[path]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _server_decision(server, distinct_id: str, **body) -> dict:
    r = httpx.post(server.url + "/flags/?v=2", json={"token": server.token, "distinct_id": distinct_id, **body})
    assert r.status_code == 200, r.text
    return r.json()["flags"]


def test_posthog_js_reads_flags_and_payloads(server):
    sync_playwright = _require_prerequisites()
    with server.api() as c:
        for f in FLAGS:
            assert c.post("/api/projects/@current/feature_flags/", json=f).status_code == 201
    site = _StaticSite(server.url, server.token)
    failed: list[str] = []
    flag_requests: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.on("response", lambda r: r.url.startswith(server.url) and r.status >= 400
                        and failed.append(f"{r.request.method} {r.url} -> {r.status}"))
                page.on("request", lambda r: r.url.startswith(server.url + "/flags")
                        and flag_requests.append(r.url))
                page.goto(site.url + "/index.html", wait_until="load")
                anon_id = page.evaluate("window.__loaded")
                page.wait_for_function("window.__flagLoads.length > 0", timeout=15_000)
                seen = page.evaluate("""() => ({
                    boolEnabled: posthog.isFeatureEnabled('js-bool'),
                    boolPayload: posthog.getFeatureFlagPayload('js-bool'),
                    variant: posthog.getFeatureFlag('js-variant'),
                    variantPayload: posthog.getFeatureFlagPayload('js-variant'),
                    off: posthog.isFeatureEnabled('js-off'),
                    proOnly: posthog.isFeatureEnabled('js-pro-only'),
                    loads: window.__flagLoads,
                })""")
                expected = _server_decision(server, anon_id)  # before identify changes the person
                # identify with a person property: posthog-js reloads flags with it
                page.evaluate("posthog.identify('flag-user@example.com', {plan: 'pro'})")
                page.wait_for_function("posthog.isFeatureEnabled('js-pro-only') === true", timeout=15_000)
                after_identify = page.evaluate("posthog.getFeatureFlag('js-pro-only')")

                def stored_calls():
                    evs = server.events(event="$feature_flag_called")
                    keys = {e["properties"].get("$feature_flag") for e in evs}
                    return evs if {"js-bool", "js-variant", "js-off"} <= keys else None

                deadline = time.monotonic() + 15
                calls = None
                while calls is None and time.monotonic() < deadline:
                    page.wait_for_timeout(300)
                    calls = stored_calls()
            finally:
                browser.close()
    finally:
        site.close()

    assert flag_requests, "posthog-js never asked /flags"
    assert not failed, failed
    assert seen["loads"][0]["errorsLoading"] is False
    assert seen["boolEnabled"] is True
    assert seen["boolPayload"] == {"headline": "Hello from Sightline", "n": 3}
    assert seen["variant"] == expected["js-variant"]["variant"] in ("control", "test")
    assert seen["variantPayload"] == json.loads(expected["js-variant"]["metadata"]["payload"])
    assert seen["off"] is False and expected["js-off"]["enabled"] is False
    assert seen["proOnly"] is False and expected["js-pro-only"]["enabled"] is False
    assert after_identify is True

    assert calls, "no $feature_flag_called events were stored"
    by_flag = {}
    for e in calls:
        by_flag.setdefault(e["properties"]["$feature_flag"], e)
    assert by_flag["js-bool"]["properties"]["$feature_flag_response"] is True
    assert by_flag["js-variant"]["properties"]["$feature_flag_response"] == seen["variant"]
    assert by_flag["js-off"]["properties"]["$feature_flag_response"] is False
    assert by_flag["js-bool"]["distinct_id"] == anon_id
