"""Unmodified posthog-js in headless Chromium reads feature flags and payloads from Sightline.

The page is served from another 127.0.0.1 origin (so CORS applies). posthog-js boots from
`/array/<token>/config` (which says `hasFeatureFlags: true`), asks `/flags/?v=2`, and
`isFeatureEnabled` / `getFeatureFlag` / `getFeatureFlagPayload` must return what the server decided
for that distinct id; the `$feature_flag_called` events they send must be stored.

Missing prerequisites skip the test, unless SIGHTLINE_REQUIRE_BROWSER=1 (CI), which makes them fail.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from browserkit import CHROMIUM, CHROMIUM_ARGS, StaticSite, require_prerequisites

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

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






def _server_decision(server, distinct_id: str, **body) -> dict:
    r = httpx.post(server.url + "/flags/?v=2", json={"token": server.token, "distinct_id": distinct_id, **body})
    assert r.status_code == 200, r.text
    return r.json()["flags"]


def test_posthog_js_reads_flags_and_payloads(server):
    sync_playwright = require_prerequisites()
    with server.api() as c:
        for f in FLAGS:
            assert c.post("/api/projects/@current/feature_flags/", json=f).status_code == 201
    site = StaticSite(PAGE_HTML, server.url, server.token)
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
