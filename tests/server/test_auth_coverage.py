"""Every route that reads data or changes configuration refuses requests without a secret key.

The list comes from the app itself, so a route added later without authentication fails here.
"""

from __future__ import annotations

import re

import httpx
import pytest

import sightline
from sightline.web.app import create_app

# Routes anyone (or anyone with the public project token) may call: the SDKs' capture, flags and
# config endpoints, health, the web app's pages and assets, and the sign-in endpoints.
PUBLIC = re.compile(r"^(/e|/i/v0/e|/capture|/track|/engage|/batch|/s|/i/v1/analytics/events|/flags|/decide"
                    r"|/array/\{token\}/config(\.js)?|/_health|/|/static/\{path:path\}"
                    r"|/api/auth/(me|login|logout|setup)"
                    r"|/api/projects/\{project_id\}/feature_flags/\{key\}/remote_config)/?$")
SAMPLE = {"project_id": "@current", "flag_id:int": "1", "experiment_id:int": "1", "person_id": "x",
          "cohort_id": "1", "insight_id:int": "1", "dashboard_id:int": "1", "key": "k"}


def protected_routes() -> list[tuple[str, str]]:
    core = sightline.open(__import__("tempfile").mkdtemp())
    try:
        app = create_app(core)
        out = []
        for route in app.routes:
            path = getattr(route, "path", None)
            if path is None or PUBLIC.match(path):
                continue
            url = re.sub(r"\{([^}]+)\}", lambda m: SAMPLE[m.group(1)], path)
            for method in sorted((route.methods or set()) - {"HEAD"}):
                out.append((method, url))
        return out
    finally:
        core.close()


ROUTES = protected_routes()


def test_the_route_list_is_not_empty():
    assert len(ROUTES) > 60  # every API route is in the list, not a few


@pytest.mark.parametrize("credentials", ["none", "project_token", "wrong_key"])
def test_every_protected_route_needs_a_secret_key(server, credentials):
    headers = {"none": {}, "project_token": {"Authorization": f"Bearer {server.token}"},
               "wrong_key": {"Authorization": "Bearer phx_not_a_real_key"}}[credentials]
    failures = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for method, url in ROUTES:
            r = client.request(method, url, headers=headers, json={} if method in ("POST", "PATCH") else None)
            if r.status_code != 401:
                failures.append(f"{method} {url} -> {r.status_code} {r.text[:80]}")
    assert failures == []
