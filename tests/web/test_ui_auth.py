"""Web app accounts over HTTP against a live server: first-run setup, sign-in, sessions, CSRF,
logout, rate limiting, and the secret API key still working beside all that."""

from __future__ import annotations

import re

import httpx
import pytest
from click.testing import CliRunner

from livesrv import start_server, stop_server

EMAIL, PASSWORD = "owner@example.com", "correct horse battery"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("ui-auth") / "data")
    yield server
    stop_server(server)


def browser(server, **kw) -> httpx.Client:
    """A cookie-keeping client that behaves like the web app (same origin, JSON)."""
    return httpx.Client(base_url=server.url, timeout=30, headers={"Accept": "application/json"}, **kw)


def setup_owner(server) -> httpx.Client:
    c = browser(server)
    r = c.post("/api/auth/setup", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return c


def test_first_run_redirects_to_setup_and_creates_the_owner_from_loopback(srv):
    r = httpx.get(srv.url + "/", headers={"Accept": "text/html"})
    assert r.status_code == 302 and r.headers["location"] == "/setup"
    me = httpx.get(srv.url + "/api/auth/me").json()
    assert me == {"user": None, "csrf_token": None, "needs_setup": True, "setup_needs_code": False}

    bad = httpx.post(srv.url + "/api/auth/setup", json={"email": "nobody", "password": PASSWORD})
    assert bad.status_code == 400 and bad.json()["attr"] == "email"
    short = httpx.post(srv.url + "/api/auth/setup", json={"email": EMAIL, "password": "short"})
    assert short.status_code == 400 and short.json()["attr"] == "password"

    c = browser(srv)
    r = c.post("/api/auth/setup", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["user"]["email"] == EMAIL and body["user"]["role"] == "owner" and body["csrf_token"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("sightline_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # plain http on 127.0.0.1; https requests get Secure
    assert c.get("/api/auth/me").json()["user"]["email"] == EMAIL

    again = httpx.post(srv.url + "/api/auth/setup", json={"email": "x@example.com", "password": PASSWORD})
    assert again.status_code == 403 and again.json()["code"] == "already_set_up"
    page = httpx.get(srv.url + "/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text


def test_login_wrong_password_is_401_and_right_one_signs_in(srv):
    c = browser(srv)
    r = c.post("/api/auth/login", json={"email": EMAIL, "password": "wrong password"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
    r = c.post("/api/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
    assert c.post("/api/auth/login", json={"email": EMAIL}).status_code == 400
    r = c.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["user"]["email"] == EMAIL
    assert "sightline_session" in c.cookies
    # the session reads data like the secret key does
    assert c.get("/api/projects/@current/events/").status_code == 200
    assert c.get("/api/projects/@current/insights/").status_code == 200


def test_unsafe_methods_with_a_session_need_the_csrf_header(srv):
    c = browser(srv)
    csrf = c.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()["csrf_token"]
    body = {"name": "csrf check", "query": {"kind": "TrendsQuery", "series": [{"event": "$pageview"}]}}
    r = c.post("/api/projects/@current/insights/", json=body)
    assert r.status_code == 403 and r.json()["code"] == "csrf_failed"
    r = c.post("/api/projects/@current/insights/", json=body, headers={"X-CSRF-Token": "not-the-token"})
    assert r.status_code == 403
    r = c.post("/api/projects/@current/insights/", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == EMAIL
    iid = r.json()["id"]
    assert c.delete(f"/api/projects/@current/insights/{iid}/").status_code == 403
    assert c.delete(f"/api/projects/@current/insights/{iid}/", headers={"X-CSRF-Token": csrf}).status_code == 204


def test_session_cookies_do_not_authorize_other_origins(srv):
    c = browser(srv)
    c.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert c.get("/api/projects/@current/events/", headers={"Origin": srv.url}).status_code == 200
    r = c.get("/api/projects/@current/events/", headers={"Origin": "http://127.0.0.1:1"})
    assert r.status_code == 401
    r = c.get("/api/projects/@current/events/", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 401
    r = c.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD},
               headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["code"] == "cross_origin"


def test_logout_ends_the_session(srv):
    c = browser(srv)
    csrf = c.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()["csrf_token"]
    stolen = c.cookies["sightline_session"]
    assert c.post("/api/auth/logout").status_code == 403  # CSRF applies to logout too
    r = c.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert c.get("/api/auth/me").json()["user"] is None
    # the old cookie value is dead on the server, not just forgotten by the client
    replay = httpx.get(srv.url + "/api/projects/@current/events/", cookies={"sightline_session": stolen})
    assert replay.status_code == 401


def test_the_api_key_still_works_and_nothing_is_open(srv):
    with srv.api() as api:
        assert api.get("/api/projects/@current/insights/").status_code == 200
        r = api.post("/api/projects/@current/dashboards/", json={"name": "from a script"})
        assert r.status_code == 201, r.text  # a bearer key needs no CSRF header
        assert r.json()["created_by"].startswith("pinned")
    for path in ("/api/projects/@current/insights/", "/api/projects/@current/dashboards/",
                 "/api/projects/@current/event_definitions/", "/api/projects/@current/property_definitions/",
                 "/api/projects/@current/property_values/?key=x", "/api/projects/@current/events/"):
        r = httpx.get(srv.url + path)
        assert r.status_code == 401, (path, r.status_code)
    r = httpx.get(srv.url + "/api/projects/@current/insights/", headers={"Authorization": "Bearer phx_wrong"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"


def test_cli_users_create_makes_an_account_that_can_sign_in(srv):
    from sightline.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["users", "create", "--data-dir", str(srv.data_dir), "--email", "dev@example.com",
                             "--password", "another password"])
    assert r.exit_code == 0, r.output
    assert "member dev@example.com" in r.output  # not the first account: a member
    dup = runner.invoke(main, ["users", "create", "--data-dir", str(srv.data_dir), "--email", "dev@example.com",
                               "--password", "another password"])
    assert dup.exit_code == 2 and "already exists" in dup.output
    short = runner.invoke(main, ["users", "create", "--data-dir", str(srv.data_dir), "--email", "x@example.com",
                                 "--password", "short"])
    assert short.exit_code == 2 and "8 characters" in short.output
    listed = runner.invoke(main, ["users", "list", "--data-dir", str(srv.data_dir)])
    assert EMAIL in listed.output and "dev@example.com" in listed.output
    c = browser(srv)
    r = c.post("/api/auth/login", json={"email": "dev@example.com", "password": "another password"})
    assert r.status_code == 200 and r.json()["user"]["role"] == "member"


def test_remote_setup_needs_the_code_from_the_log_and_failed_logins_back_off(tmp_path):
    server = start_server(tmp_path / "data")
    try:
        code = re.search(r"one-time setup code (\S+)", server.log()).group(1)
        remote = {"X-Forwarded-For": "203.0.113.9"}  # as seen through a proxy: not loopback
        me = httpx.get(server.url + "/api/auth/me", headers=remote).json()
        assert me["needs_setup"] and me["setup_needs_code"]
        r = httpx.post(server.url + "/api/auth/setup", headers=remote, json={"email": EMAIL, "password": PASSWORD})
        assert r.status_code == 403 and r.json()["code"] == "setup_code_required"
        r = httpx.post(server.url + "/api/auth/setup", headers=remote,
                       json={"email": EMAIL, "password": PASSWORD, "setup_code": "000000-000000-000000"})
        assert r.status_code == 403
        r = httpx.post(server.url + "/api/auth/setup", headers=remote,
                       json={"email": EMAIL, "password": PASSWORD, "setup_code": code})
        assert r.status_code == 201, r.text

        statuses = []
        for _ in range(7):
            r = httpx.post(server.url + "/api/auth/login", json={"email": EMAIL, "password": "wrong password"})
            statuses.append(r.status_code)
        assert statuses[:5] == [401] * 5 and statuses[-1] == 429, statuses
        assert int(r.headers["retry-after"]) >= 1 and r.json()["code"] == "too_many_attempts"
        # while backing off, even the right password waits
        r = httpx.post(server.url + "/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert r.status_code == 429
    finally:
        stop_server(server)


def test_limiter_backs_off_exponentially_and_forgets_on_success():
    from sightline.web.ui.auth import LoginLimiter

    lim = LoginLimiter(free=2, cap_s=10)
    assert lim.retry_after("ip", now=0) == 0
    lim.failed("ip", now=0)
    lim.failed("ip", now=0)
    assert lim.retry_after("ip", now=0) == 2  # 2^1 s after the free attempts
    lim.failed("ip", now=2)
    assert lim.retry_after("ip", now=2) == 4
    lim.failed("ip", now=6)
    lim.failed("ip", now=6)
    lim.failed("ip", now=6)
    assert lim.retry_after("ip", now=6) == 10  # capped
    assert lim.retry_after("other", now=6) == 0
    lim.succeeded("ip")
    assert lim.retry_after("ip", now=6) == 0


def test_passwords_are_salted_scrypt_hashes():
    from sightline.web.ui.auth import hash_password, verify_password

    a, b = hash_password("s3cret pass"), hash_password("s3cret pass")
    assert a != b and a.startswith("scrypt$") and "s3cret" not in a
    assert verify_password("s3cret pass", a) and verify_password("s3cret pass", b)
    assert not verify_password("s3cret pasS", a)
    assert not verify_password("s3cret pass", "garbage")
