"""The capture API over real HTTP: encodings, status codes, bad input, CORS, auth, read-back."""

import base64
import gzip
import json
import uuid
import zlib

import httpx
import pytest

CAPTURE_PATHS = ["/e/", "/i/v0/e/", "/capture/", "/track/", "/batch/", "/engage/", "/e", "/batch"]


def run_id() -> str:
    return uuid.uuid4().hex[:10]


def ev(name, distinct_id="d1", **props):
    return {"event": name, "distinct_id": distinct_id, "properties": props, "uuid": str(uuid.uuid4())}


@pytest.mark.parametrize("path", CAPTURE_PATHS)
def test_every_capture_path_stores_and_answers_status_1(server, path):
    name = f"path-{run_id()}"
    r = httpx.post(server.url + path, json={"api_key": server.token, "batch": [ev(name), ev(name)]})
    assert r.status_code == 200 and r.json() == {"status": 1}
    assert len(server.events(event=name)) == 2


def test_encodings(server):
    name = f"enc-{run_id()}"
    body = json.dumps([{**ev(name), "properties": {"token": server.token, "how": "array"}}]).encode()
    single = json.dumps({**ev(name), "api_key": server.token}).encode()
    b64 = base64.b64encode(body).decode()
    cases = [
        dict(content=gzip.compress(body), headers={"Content-Type": "text/plain"}),  # magic sniffing
        dict(content=gzip.compress(body), headers={"Content-Encoding": "gzip"}),
        dict(content=gzip.compress(body), params={"compression": "gzip-js"}),
        dict(content=f"data={b64.replace('+', ' ')}&compression=base64".encode(),
             headers={"Content-Type": "application/x-www-form-urlencoded"}),
        dict(content=single, headers={"Content-Type": "application/json"}),
    ]
    for case in cases:
        r = httpx.post(server.url + "/e/", **case)
        assert r.status_code == 200, (case, r.text)
    r = httpx.get(server.url + "/e/", params={"data": b64})  # legacy GET beacon
    assert r.status_code == 200
    r = httpx.post(server.url + "/e/", params={"beacon": "1"}, content=gzip.compress(body))
    assert r.status_code == 204 and r.content == b""
    # each request carried a fresh uuid except the array body, sent 6 times: dedup keeps one
    stored = server.events(event=name)
    assert len({e["uuid"] for e in stored}) == len(stored) == 2


def test_token_in_query_string(server):
    name = f"q-{run_id()}"
    r = httpx.post(server.url + "/capture/", params={"token": server.token}, json=[ev(name)])
    assert r.status_code == 200
    assert len(server.events(event=name)) == 1


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "empty_payload"),
    (b'{"api_key": "TOKEN", "batch": "nope"}', 400, "invalid_payload"),
    (b'\xff\xfe\x00garbage', 400, None),
    (b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
    (b'{"api_key": "phc_wrong", "batch": [{"event": "e", "distinct_id": "d"}]}', 401, "invalid_token"),
    (b'{"batch": [{"event": "e", "distinct_id": "d"}]}', 401, "missing_token"),
    (b'[{"event": "e", "distinct_id": "d", "api_key": "a"}, {"event": "e", "distinct_id": "d", "api_key": "b"}]',
     401, "mixed_tokens"),
    (b'{"api_key": "TOKEN", "batch": [{"distinct_id": "d"}]}', 400, "missing_event_name"),
    (b'{"api_key": "TOKEN", "batch": [{"event": "e"}]}', 400, "missing_distinct_id"),
])
def test_bad_input_gets_precise_json_4xx(server, body, status, code):
    r = httpx.post(server.url + "/batch/", content=body.replace(b"TOKEN", server.token.encode()))
    assert r.status_code == status, r.text
    err = r.json()
    assert err["detail"] and err["type"]
    if code:
        assert err["code"] == code


def test_oversized_body_and_decompression_bomb_get_413(server):
    big = b'{"api_key": "x", "batch": [' + b" " * (21 * 1024 * 1024) + b"]}"
    r = httpx.post(server.url + "/batch/", content=big)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = comp.compress(b'{"batch": [') + b"".join(comp.compress(b" " * (1 << 20)) for _ in range(64)) + comp.flush()
    assert len(bomb) < 200_000
    r = httpx.post(server.url + "/batch/", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert httpx.get(server.url + "/_health").status_code == 200


def test_valid_events_beside_invalid_ones_are_stored(server):
    name = f"mixed-{run_id()}"
    batch = [ev(name), {"event": name}, ev(name, distinct_id="d2"), "junk",
             {**ev(name), "properties": {"huge": "x" * (2 * 1024 * 1024)}}]
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": batch})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == 1
    assert [(x["index"], x["code"]) for x in body["rejected"]] == [
        (1, "missing_distinct_id"), (3, "invalid_event"), (4, "event_too_large")]
    assert sorted(e["distinct_id"] for e in server.events(event=name)) == ["d1", "d2"]


def test_hostile_strings_are_stored_verbatim(server):
    name = f"hostile-{run_id()}"
    nasty = {"sql": "'); DROP TABLE events; --", "nul": "a\u0000b", "rtl": "\u202egnp.exe",
             "emoji": "🔥" * 100, "html": "<script>alert(1)</script>", "$current_url": "javascript:alert(1)",
             "k\"ey": "quote in key", "deep": {"a": {"b": {"c": [1, {"d": None}]}}}}
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token,
                                                 "batch": [{**ev(name, distinct_id="x' OR 1=1"), "properties": nasty}]})
    assert r.status_code == 200
    [stored] = server.events(event=name)
    assert stored["distinct_id"] == "x' OR 1=1"
    for k, v in nasty.items():
        assert stored["properties"][k] == v


def test_cors_preflight_and_headers(server):
    origin = "https://shop.example.com"
    r = httpx.options(server.url + "/e/", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 200 and r.json() == {"status": 1}
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "content-type" in r.headers["access-control-allow-headers"]
    r = httpx.options(server.url + "/flags/?v=2", headers={"Origin": origin})
    assert r.status_code == 204
    r = httpx.post(server.url + "/e/", headers={"Origin": origin},
                   json={"api_key": server.token, "batch": [ev(f"cors-{run_id()}")]})
    assert r.headers["access-control-allow-origin"] == origin


def test_remote_config_for_posthog_js(server):
    r = httpx.get(f"{server.url}/array/{server.token}/config")
    assert r.status_code == 200
    config = r.json()
    assert "gzip-js" in config["supportedCompression"]
    assert config["analytics"]["endpoint"] == "/i/v0/e/"
    assert config["sessionRecording"] is False
    r = httpx.get(f"{server.url}/array/{server.token}/config.js")
    assert r.status_code == 200 and "_POSTHOG_REMOTE_CONFIG" in r.text and server.token in r.text
    assert httpx.get(f"{server.url}/array/phc_unknown/config").status_code == 404


def test_flags_endpoints_answer_the_shapes_sdks_expect(server):
    r = httpx.post(server.url + "/flags/?v=2", json={"token": server.token, "distinct_id": "d"})
    assert r.status_code == 200 and r.json()["flags"] == {} and r.json()["requestId"]
    r = httpx.post(server.url + "/decide/?v=3", json={"token": server.token, "distinct_id": "d"})
    assert r.json()["featureFlags"] == {}
    r = httpx.post(server.url + "/flags/?v=2", json={"token": "phc_nope", "distinct_id": "d"})
    assert r.status_code == 401


def test_read_api_needs_a_secret_key(server):
    url = server.url + "/api/projects/@current/events/"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {server.token}"}).json()["code"] == \
        "project_token_not_allowed"
    assert httpx.get(url, headers={"Authorization": "Bearer phx_wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {server.api_key}"}).status_code == 200
    assert httpx.get(server.url + "/metrics").status_code == 401


def test_read_api_pagination_and_validation(server):
    name = f"page-{run_id()}"
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token,
                                                 "batch": [{**ev(name), "timestamp": f"2024-03-01T00:00:{i:02d}Z"}
                                                           for i in range(25)]})
    assert r.status_code == 200
    seen = []
    with server.api() as c:
        url, params = "/api/projects/@current/events/", {"event": name, "limit": 10}
        pages = 0
        while url:
            body = c.get(url, params=params).json()
            seen += [e["timestamp"] for e in body["results"]]
            url, params = body["next"], None
            pages += 1
        assert pages == 3
        assert seen == sorted(seen, reverse=True) and len(set(seen)) == 25
        assert c.get("/api/projects/@current/events/", params={"limit": "x"}).status_code == 400
        assert c.get("/api/projects/@current/events/", params={"cursor": "@@"}).status_code == 400
        assert c.get("/api/projects/99/events/").status_code == 404
        after = c.get("/api/projects/@current/events/", params={"event": name, "after": "2024-03-01T00:00:19Z"})
        assert len(after.json()["results"]) == 5


def test_v1_endpoint_with_bearer_token(server):
    name = f"v1-{run_id()}"
    e = ev(name)
    body = {"created_at": "2024-01-01T00:00:00Z", "batch": [{**e, "timestamp": "2024-01-01T00:00:00Z",
                                                              "options": {"process_person_profile": False}}]}
    r = httpx.post(server.url + "/i/v1/analytics/events", json=body,
                   headers={"Authorization": f"Bearer {server.token}", "PostHog-Sdk-Info": "posthog-python/9.9.9"})
    assert r.status_code == 200 and r.json() == {"results": {e["uuid"]: {"result": "ok"}}}
    [stored] = server.events(event=name)
    assert stored["properties"]["$lib"] == "posthog-python"
    assert stored["properties"]["$process_person_profile"] is False
    r = httpx.post(server.url + "/i/v1/analytics/events", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_unknown_paths_are_json_404(server):
    r = httpx.get(server.url + "/nope")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
