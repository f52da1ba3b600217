"""``CaptureFastPath`` (capture requests skip Starlette's router) answers every request exactly as
the routed handler does: two live servers, one with ``SIGHTLINE_CAPTURE_FAST_PATH=0``, get the
same requests and must give the same status, body and headers, and store the same events."""

from __future__ import annotations

import base64
import gzip
import zlib

import httpx
import orjson
import pytest

from tests.livesrv import TOKEN, start_server, stop_server

UUIDS = [f"0190a8c2-0000-7000-8000-{i:012d}" for i in range(40)]


def _ev(i: int, **extra) -> dict:
    return {"event": f"fast-{i}", "distinct_id": f"user-{i % 3}", "uuid": UUIDS[i],
            "timestamp": "2026-11-27T12:00:00.000Z", "properties": {"$current_url": "https://x.test/", "n": i},
            **extra}


def _batch(events: list, token: str = TOKEN) -> bytes:
    return orjson.dumps({"api_key": token, "batch": events, "sent_at": "2026-11-27T12:00:01.000Z"})


def _bomb() -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    return comp.compress(b'{"batch": [') + b"".join(comp.compress(b" " * (1 << 20)) for _ in range(24)) + comp.flush()


JSON = {"Content-Type": "application/json"}
GZIP = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
ORIGIN = {"Origin": "https://app.example.com"}

# (method, path, body, headers)
REQUESTS = [
    ("POST", "/batch/", _batch([_ev(0), _ev(1)]), JSON),
    ("POST", "/batch", gzip.compress(_batch([_ev(2), _ev(3)])), GZIP),
    ("POST", "/e/", orjson.dumps({**_ev(4), "api_key": TOKEN}), JSON),
    ("POST", "/i/v0/e/", gzip.compress(orjson.dumps([{**_ev(5), "api_key": TOKEN}])), GZIP),
    ("POST", "/capture/", orjson.dumps({**_ev(6), "api_key": TOKEN}), JSON),
    ("POST", "/track", orjson.dumps({**_ev(7), "api_key": TOKEN}), JSON),
    ("POST", "/engage/", orjson.dumps({**_ev(8), "api_key": TOKEN, "$set": {"plan": "pro"}}), JSON),
    ("POST", "/e/?compression=base64", base64.b64encode(orjson.dumps({**_ev(9), "api_key": TOKEN})), {}),
    ("POST", "/e/?beacon=1", orjson.dumps({**_ev(10), "api_key": TOKEN}), {"Content-Type": "text/plain"}),
    ("GET", "/e/?data=" + base64.b64encode(orjson.dumps({**_ev(11), "api_key": TOKEN})).decode(), b"", {}),
    ("GET", "/batch/", b"", {}),
    ("POST", "/batch/", _batch([_ev(12)]), {**JSON, **ORIGIN}),
    ("POST", "/batch/", b"{not json", {**JSON, **ORIGIN}),
    # bad input, as tests/server/test_capture_http.py sends it
    ("POST", "/batch/", b"{not json", {}),
    ("POST", "/batch/", b"", {}),
    ("POST", "/batch/", _batch("nope"), {}),  # type: ignore[arg-type]
    ("POST", "/batch/", b"\xff\xfe\x00garbage", {}),
    ("POST", "/batch/", b"[" * 5000 + b"]" * 5000, {}),
    ("POST", "/batch/", _batch([{"event": "e", "distinct_id": "d"}], token="phc_wrong"), {}),
    ("POST", "/batch/", b'{"batch": [{"event": "e", "distinct_id": "d"}]}', {}),
    ("POST", "/batch/", b'[{"event": "e", "distinct_id": "d", "api_key": "a"}, '
                        b'{"event": "e", "distinct_id": "d", "api_key": "b"}]', {}),
    ("POST", "/batch/", _batch([{"distinct_id": "d"}]), {}),
    ("POST", "/batch/", _batch([{"event": "e"}]), {}),
    ("POST", "/batch/", _batch([_ev(13), {"event": "x"}, "junk", _ev(14, uuid="not-a-uuid"),
                                _ev(15, timestamp="yesterday")]), JSON),
    ("POST", "/batch/", gzip.compress(b"{}")[:-4], GZIP),
    ("POST", "/batch/", gzip.compress(_batch([_ev(16)])), {"Content-Encoding": "br"}),
    ("POST", "/batch/", _bomb(), GZIP),
    ("POST", "/batch/", _batch([_ev(0), _ev(1), _ev(17)]), JSON),  # duplicates of stored events
    # not the fast path's: the router answers both servers
    ("PUT", "/batch/", _batch([_ev(18)]), JSON),
    ("HEAD", "/batch/", b"", {}),
    ("OPTIONS", "/batch/", b"", {**ORIGIN, "Access-Control-Request-Headers": "content-type"}),
    ("POST", "/batchx/", _batch([_ev(19)]), JSON),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    fast = start_server(tmp_path_factory.mktemp("fast") / "data")
    routed = start_server(tmp_path_factory.mktemp("routed") / "data",
                          extra_env={"SIGHTLINE_CAPTURE_FAST_PATH": "0"})
    yield fast, routed
    stop_server(fast)
    stop_server(routed)


def _answer(server, method: str, path: str, body: bytes, headers: dict) -> tuple:
    r = httpx.request(method, server.url + path, content=body or None, headers=headers, timeout=30)
    kept = {k: v for k, v in r.headers.items() if k.lower() not in ("date", "content-length")}
    return r.status_code, r.content, sorted(kept.items())


def test_fast_path_answers_as_the_router(servers):
    fast, routed = servers
    answers = []
    for method, path, body, headers in REQUESTS:
        a = _answer(fast, method, path, body, headers)
        b = _answer(routed, method, path, body, headers)
        assert a == b, (method, path, body[:80])
        answers.append(a)
    statuses = [a[0] for a in answers]
    # the cases really cover successes, 204, every error family and the CORS-decorated answers
    assert {200, 204, 400, 401, 405, 413, 415}.issubset(statuses), statuses
    assert any(("access-control-allow-origin", ORIGIN["Origin"]) in a[2] for a in answers)
    rejected = orjson.loads(answers[23][1])["rejected"]
    assert [r["index"] for r in rejected] == [1, 2, 3, 4]

    def stored(server):
        return sorted((e["uuid"], e["event"], e["distinct_id"]) for e in server.events())

    expected = sorted((UUIDS[i], f"fast-{i}", f"user-{i % 3}") for i in [*range(14), 17])
    assert stored(fast) == expected
    assert stored(routed) == expected


def test_fast_path_takes_only_capture_gets_and_posts(monkeypatch):
    """Which requests the middleware answers itself (so the comparison above compares two paths)."""
    import asyncio

    from starlette.responses import Response

    from sightline.web import capture

    handled: list[str] = []

    async def fake_capture(request):
        handled.append(f"{request.method} {request.url.path}")
        return Response(b"fast", status_code=200)

    passed: list[str] = []

    async def inner(scope, receive, send):
        passed.append(f"{scope['method']} {scope['path']}")
        await Response(b"routed")(scope, receive, send)

    monkeypatch.setattr(capture, "capture", fake_capture)

    async def call(mw, method, path):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
                 "query_string": b"", "headers": [], "scheme": "http", "server": ("t", 80),
                 "root_path": "", "http_version": "1.1", "client": ("127.0.0.1", 1)}
        await mw(scope, receive, send)
        return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    mw = capture.CaptureFastPath(inner)
    cases = [("POST", "/batch/"), ("GET", "/e"), ("POST", "/i/v0/e/"), ("POST", "/engage"),
             ("HEAD", "/batch/"), ("PUT", "/e/"), ("POST", "/batchx"), ("POST", "/s/"),
             ("POST", "/i/v1/analytics/events")]
    bodies = [asyncio.run(call(mw, m, p)) for m, p in cases]
    assert bodies == [b"fast"] * 4 + [b"routed"] * 5
    assert handled == ["POST /batch/", "GET /e", "POST /i/v0/e/", "POST /engage"]
    monkeypatch.setenv("SIGHTLINE_CAPTURE_FAST_PATH", "0")
    assert asyncio.run(call(capture.CaptureFastPath(inner), "POST", "/batch/")) == b"routed"
