"""Unmodified posthog-js, in a real headless Chromium, sending events to a live Sightline server.

The test page is served by a separate static HTTP server on another 127.0.0.1 port, so every call
posthog-js makes to Sightline is cross-origin and goes through CORS (and preflights where the browser
needs one). The SDK bundle is the pinned `posthog-js` from tests/browser/package.json
(`cd tests/browser && npm ci`). Chromium comes from the OS (`apt-get install -y chromium`).

Missing prerequisites skip the test, unless SIGHTLINE_REQUIRE_BROWSER=1 (CI), which makes them fail.
"""

from __future__ import annotations

import gzip
import json
import time
from urllib.parse import urlsplit

import pytest

from browserkit import CHROMIUM, CHROMIUM_ARGS, StaticSite, require_prerequisites

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

USER_ID = "user-42@example.com"
CUSTOM_EVENT = "browser_test_clicked"
CUSTOM_PROPS = {"button": "upgrade", "seats": 3, "ratio": 0.5, "trial": True,
                "tags": ["a", "b"], "nested": {"depth": 2, "label": "x"}}
CAPTURE_PATHS = {"/e", "/e/", "/i/v0/e", "/i/v0/e/"}
GZIP_MAGIC = b"\x1f\x8b"






PAGE_HTML = """<!doctype html>
<html>
<head>
  <meta charset="utf-8">
  <title>Sightline posthog-js test</title>
  <script src="/array.full.js"></script>
</head>
<body>
  <h1>Sightline posthog-js browser test</h1>
  <script>
    window.__sent = [];           // events posthog-js handed to its transport (before_send)
    window.__requestErrors = [];  // what posthog-js itself saw as HTTP errors (status >= 400)
    window.__loaded = new Promise(function (resolve) {
      posthog.init(__TOKEN__, {
        api_host: __API_HOST__,
        opt_out_useragent_filter: true,
        debug: true,
        before_send: function (ev) { if (ev) { window.__sent.push(ev.event); } return ev; },
        on_request_error: function (res) {
          window.__requestErrors.push({statusCode: res.statusCode, text: String(res.text || '')});
        },
        loaded: function (ph) { resolve(ph.get_distinct_id()); }
      });
    });
  </script>
</body>
</html>
"""

# A JSON POST from the page is not a "simple" request, so the browser preflights it (OPTIONS) and
# enforces the CORS answer. posthog-js sends gzip as text/plain (no preflight), so check it directly.
PREFLIGHTED_FETCH = """async ([url, token, distinctId]) => {
  const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
                              body: JSON.stringify({token: token, distinct_id: distinctId})});
  return {status: r.status, body: await r.text()};
}"""


def _poll(fn, timeout: float = 15.0, interval: float = 0.2, sleep=time.sleep):
    """Call ``fn`` until it returns something truthy; return the last value either way.

    While the browser is open, pass ``sleep=lambda s: page.wait_for_timeout(s * 1000)``: the sync
    Playwright API only delivers events (responses, request finished) while one of its calls runs.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        sleep(interval)


def _event_names(body: bytes) -> list[str]:
    """Event names in one posthog-js capture body (gzip JSON; best effort, for diagnostics)."""
    try:
        data = json.loads(gzip.decompress(body) if body[:2] == GZIP_MAGIC else body)
    except Exception:  # noqa: BLE001 - diagnostics only
        return ["<undecodable>"]
    if isinstance(data, dict):
        data = data.get("batch", [data])
    return [e.get("event", "?") for e in data if isinstance(e, dict)]


def test_posthog_js_sends_events_to_sightline(server):
    sync_playwright = require_prerequisites()
    started = time.monotonic()
    site = StaticSite(PAGE_HTML, server.url, server.token)
    page_url = site.url + "/index.html"
    origin = server.url

    console: list[str] = []
    page_errors: list[str] = []
    failed: list[str] = []          # requests to Sightline that failed or answered >= 400
    capture_requests: list[dict] = []
    sightline_requests: list[str] = []
    pending: set = set()

    def on_request(req):
        if not req.url.startswith(origin):
            return
        body = req.post_data_buffer or b""
        pending.add(req)
        line = f"{req.method} {req.url} content-type={req.headers.get('content-type')}"
        if req.method == "POST" and urlsplit(req.url).path in CAPTURE_PATHS:
            capture_requests.append({"url": req.url, "headers": req.headers, "body": body})
            line += f" gzip={body[:2] == GZIP_MAGIC} events={_event_names(body)}"
        sightline_requests.append(line)

    def on_finished(req):
        pending.discard(req)

    def on_failed(req):
        pending.discard(req)
        if req.url.startswith(origin):
            failed.append(f"{req.method} {req.url} failed: {req.failure} "
                          f"request headers={req.headers} body[:64]={(req.post_data_buffer or b'')[:64]!r}")

    def on_response(resp):
        if resp.url.startswith(origin) and resp.status >= 400:
            req = resp.request
            failed.append(f"{req.method} {resp.url} -> HTTP {resp.status} "
                          f"request headers={req.headers} body[:64]={(req.post_data_buffer or b'')[:64]!r} "
                          f"response headers={resp.headers} response={resp.text()[:300]!r}")

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
                page.on("pageerror", lambda e: page_errors.append(str(e)))
                page.on("request", on_request)
                page.on("requestfinished", on_finished)
                page.on("requestfailed", on_failed)
                page.on("response", on_response)

                def pump(seconds: float) -> None:
                    page.wait_for_timeout(seconds * 1000)

                page.goto(page_url, wait_until="load")
                anon_id = page.evaluate("window.__loaded")
                assert anon_id and anon_id != USER_ID
                # The automatic $pageview is handed to the transport just after init.
                page.wait_for_function("window.__sent.includes('$pageview')", timeout=10_000)
                page.evaluate("([name, props]) => posthog.capture(name, props)",
                              [CUSTOM_EVENT, CUSTOM_PROPS])
                page.evaluate("([id, props]) => posthog.identify(id, props)",
                              [USER_ID, {"plan": "pro"}])
                assert page.evaluate("posthog.get_distinct_id()") == USER_ID
                page.wait_for_function("window.__sent.includes('$identify')", timeout=10_000)

                # posthog-js batches (every 3 s); poll the read-back API until all three are stored.
                def stored():
                    evs = server.events()
                    names = {e["event"] for e in evs}
                    return evs if {"$pageview", CUSTOM_EVENT, "$identify"} <= names else None

                events = _poll(stored, timeout=15, sleep=pump) or server.events()
                preflighted = page.evaluate(PREFLIGHTED_FETCH,
                                            [origin + "/flags/?v=2", server.token, USER_ID])
                _poll(lambda: not pending, timeout=5, sleep=pump)
                still_pending = [f"{r.method} {r.url}" for r in pending]
                sdk_request_errors = page.evaluate("window.__requestErrors")
            finally:
                browser.close()
    finally:
        site.close()
        print("\n--- browser console ---\n" + "\n".join(console))
        print("--- requests to Sightline ---\n" + "\n".join(sightline_requests))
        print(f"--- browser phase took {time.monotonic() - started:.1f}s ---")

    names = sorted(e["event"] for e in events)
    assert {"$pageview", CUSTOM_EVENT, "$identify"} <= set(names), (
        f"stored events: {names}\nfailed: {failed}\nserver log:\n{server.log()}")

    # Nothing posthog-js asked Sightline for may 404, fail CORS, or error.
    assert not failed, "requests to Sightline failed:\n" + "\n".join(failed)
    assert not sdk_request_errors, sdk_request_errors
    assert not still_pending, f"requests to Sightline never completed: {still_pending}"
    assert preflighted["status"] == 200, preflighted
    assert not page_errors, page_errors
    bad_console = [m for m in console if m.startswith("[error]")
                   and (origin in m or "CORS" in m or "Failed to load resource" in m)]
    assert not bad_console, bad_console

    # The pageview: sent by the web SDK, with the page URL and the anonymous id.
    pageviews = [e for e in events if e["event"] == "$pageview"]
    assert len(pageviews) == 1, pageviews
    pv = pageviews[0]
    assert pv["properties"]["$current_url"] == page_url
    assert pv["properties"]["$lib"] == "web"
    assert pv["distinct_id"] == anon_id

    # The custom event with its properties intact.
    custom = [e for e in events if e["event"] == CUSTOM_EVENT]
    assert len(custom) == 1, custom
    for key, value in CUSTOM_PROPS.items():
        assert custom[0]["properties"][key] == value, key
    assert custom[0]["distinct_id"] == anon_id

    # $identify links the anonymous id to the user and sets the person property.
    identifies = [e for e in events if e["event"] == "$identify"]
    assert len(identifies) == 1, identifies
    ident = identifies[0]
    assert ident["distinct_id"] == USER_ID
    assert ident["properties"]["$anon_distinct_id"] == anon_id
    assert ident["properties"].get("$set", {}).get("plan") == "pro"

    persons = _poll(lambda: [p for p in server.persons(distinct_id=USER_ID)
                             if anon_id in p["distinct_ids"]
                             and p["properties"].get("plan") == "pro"], timeout=10)
    assert persons, server.persons(distinct_id=USER_ID)
    all_for_user = server.persons(distinct_id=USER_ID)
    assert len(all_for_user) == 1, all_for_user
    person = all_for_user[0]
    assert USER_ID in person["distinct_ids"] and anon_id in person["distinct_ids"]
    assert person["properties"]["plan"] == "pro"

    # The merged person's events include the anonymous pageview.
    user_events = server.events(distinct_id=USER_ID)
    assert any(e["event"] == "$pageview" and e["distinct_id"] == anon_id for e in user_events), (
        [(e["event"], e["distinct_id"]) for e in user_events])

    # Events travelled gzip-compressed (the config advertises gzip / gzip-js).
    assert capture_requests, "no capture POST to Sightline was observed"
    for req in capture_requests:
        assert req["body"][:2] == GZIP_MAGIC, (req["url"], req["headers"], req["body"][:40])
