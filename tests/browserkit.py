"""Shared pieces of the real-browser tests: prerequisites, and a second origin for the test page."""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
POSTHOG_BUNDLE = BROWSER_DIR / "node_modules" / "posthog-js" / "dist" / "array.full.js"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def missing(reason: str) -> None:
    """Skip, unless SIGHTLINE_REQUIRE_BROWSER=1 (CI), where a missing prerequisite fails."""
    if os.environ.get("SIGHTLINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SIGHTLINE_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_prerequisites():
    """Chromium, the posthog-js bundle and Playwright, or skip/fail; returns ``sync_playwright``."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    if not POSTHOG_BUNDLE.exists():
        missing(f"{POSTHOG_BUNDLE} is missing (cd tests/browser && npm ci)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package is not installed (pip install -e .[dev])")
    return sync_playwright


class StaticSite:
    """A tiny threaded HTTP server for a test page and the SDK bundle: a separate origin, so CORS
    applies. ``page_html`` may contain ``__TOKEN__`` and ``__API_HOST__`` placeholders."""

    def __init__(self, page_html: str, api_host: str, token: str):
        page = (page_html.replace("__TOKEN__", json.dumps(token))
                .replace("__API_HOST__", json.dumps(api_host))).encode()
        files = {"/index.html": (page, "text/html; charset=utf-8"),
                 "/array.full.js": (POSTHOG_BUNDLE.read_bytes(), "application/javascript")}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                path = urlsplit(self.path).path
                if path not in files:
                    self.send_response(204 if path == "/favicon.ico" else 404)
                    self.end_headers()
                    return
                body, ctype = files[path]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
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
