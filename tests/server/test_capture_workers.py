"""`sightline serve --capture-workers 2`: the same answers and the same stored data as a server
without workers, for good and bad requests; a helper that dies costs nothing; durable on kill -9."""

from __future__ import annotations

import base64
import gzip
import os
import signal
import time
import uuid

import httpx
import orjson
import pytest

from durakit import assert_nothing_acknowledged_lost, kill_mid_ingestion
from livesrv import start_server, stop_server


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("pooled") / "data", args=["--capture-workers", "2"])
    yield srv
    stop_server(srv)


def _requests(token: str, tag: str) -> list[tuple[str, str, dict, bytes | None, dict]]:
    """(method, path, params, body, headers) for many request shapes, good and bad."""
    u = [str(uuid.UUID(int=(0x0190A6B0 << 96) | (hash(tag) & 0xFFFF) << 16 | i)) for i in range(40)]

    def ev(i: int, name: str = "$pageview", did: str = "a", **extra) -> dict:
        props = extra.pop("properties", {})
        return {"event": name, "distinct_id": f"{tag}-{did}", "uuid": u[i], "timestamp": "2026-05-01T10:00:00.000Z",
                "properties": {"$browser": "Chrome", "$current_url": f"https://x.test/{i}", **props}, **extra}

    batch = {"api_key": token, "batch": [
        ev(0), ev(1, did="b"), ev(2, "$identify", "user", properties={"$anon_distinct_id": f"{tag}-a"},
                                 **{"$set": {"email": "e@x.test"}}),
        ev(3, did="user"), ev(4, "clicked", "b", properties={"$groups": {"company": "acme"}}),
        {"event": "", "distinct_id": "x"}, ev(5, did="c", properties={"$ip": "10.0.0.1"})]}
    js = {"Content-Type": "application/json"}
    gz = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    b64 = base64.b64encode(orjson.dumps({"api_key": token, "batch": [ev(6, did="d"), ev(7, did="d")]})).decode()
    return [
        ("POST", "/batch/", {}, gzip.compress(orjson.dumps(batch)), gz),
        ("POST", "/batch/", {}, orjson.dumps({"api_key": token, "batch": [ev(8), ev(9, did="e")]}), js),
        ("POST", "/e/", {}, orjson.dumps({**ev(10, did="f"), "api_key": token}), js),
        ("POST", "/i/v0/e/", {"compression": "gzip-js"}, gzip.compress(orjson.dumps(
            [{**ev(11, did="g"), "properties": {"token": token}}])), {"Content-Type": "text/plain"}),
        ("POST", "/batch/", {}, f"data={b64}".encode(), form),
        ("GET", "/e/", {"data": base64.b64encode(orjson.dumps({**ev(12, did="h"), "api_key": token})).decode()},
         None, {}),
        ("POST", "/batch/", {"beacon": "1"}, orjson.dumps({"api_key": token, "batch": [ev(13, did="i")]}), js),
        ("POST", "/batch/", {}, orjson.dumps({"api_key": token, "batch": [ev(0), ev(14, did="a")]}), js),  # a retry
        # bad input: each must get exactly the inline path's answer
        ("POST", "/batch/", {}, b"{not json", js),
        ("POST", "/batch/", {}, orjson.dumps({"batch": [ev(15)]}), js),  # no token
        ("POST", "/batch/", {}, orjson.dumps({"api_key": "phc_wrong", "batch": [ev(16)]}), js),
        ("POST", "/batch/", {}, orjson.dumps({"api_key": token, "batch": [{"event": "x"}]}), js),
        ("POST", "/batch/", {}, gzip.compress(b"x" * 100)[:20], gz),  # truncated gzip
        ("POST", "/batch/", {}, orjson.dumps({"api_key": token, "batch": "nope"}), js),
        ("POST", "/batch/", {}, "\u00e9".encode("latin-1"), js),
        ("POST", "/batch/", {}, b"[" * 5000 + b"]" * 5000, js),
    ]


def _send(srv, reqs) -> list[tuple[int, object]]:
    out = []
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for method, path, params, body, headers in reqs:
            r = c.request(method, path, params=params, content=body, headers=headers)
            out.append((r.status_code, r.json() if r.content else None))
    return out


def _stored(srv, tag: str) -> tuple[list[tuple], list[tuple]]:
    rows = sorted((e["uuid"], e["event"], e["distinct_id"], e["timestamp"], e["person_id"],
                   orjson.dumps(e["properties"], option=orjson.OPT_SORT_KEYS).decode())
                  for e in srv.events() if e["distinct_id"].startswith(tag + "-"))
    persons = sorted((p["id"], tuple(sorted(p["distinct_ids"])), orjson.dumps(p["properties"], option=orjson.OPT_SORT_KEYS))
                     for p in srv.persons() if any(d.startswith(tag + "-") for d in p["distinct_ids"]))
    return rows, persons


def test_answers_and_stored_data_match_the_inline_server(server, pooled):
    tag = f"cw{uuid.uuid4().hex[:6]}"
    reqs = _requests(server.token, tag)
    inline = _send(server, reqs)
    workers = _send(pooled, reqs)
    assert workers == inline
    assert [s for s, _ in inline][:8] == [200, 200, 200, 200, 200, 200, 204, 200]
    assert all(400 <= s < 500 for s, _ in inline[8:])
    (a, pa), (b, pb) = _stored(server, tag), _stored(pooled, tag)
    assert len(a) == 15 and a == b
    assert pa == pb and any(len(p[1]) > 1 for p in pa)  # the $identify merged two ids
    assert not any("$ip" in row[5] for row in b)  # dropped, as inline
    # the helpers did the work (the server's children), not only the inline fallback
    assert len(_children(pooled.proc.pid)) == 2


def test_a_helper_that_dies_is_replaced_and_no_request_fails(pooled):
    tag = f"cx{uuid.uuid4().hex[:6]}"
    before = _children(pooled.proc.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    results = []
    for i in range(20):
        batch = [{"event": "after-kill", "distinct_id": f"{tag}-{i}", "uuid": str(uuid.uuid4())} for _ in range(5)]
        r = httpx.post(pooled.url + "/batch/", json={"api_key": pooled.token, "batch": batch}, timeout=30)
        results.append(r.status_code)
    assert results == [200] * 20
    assert len([e for e in pooled.events(event="after-kill") if e["distinct_id"].startswith(tag)]) == 100
    deadline = time.time() + 20
    while time.time() < deadline:
        now = [c for c in _children(pooled.proc.pid) if c != before[0]]
        if len(now) == 2:
            break
        httpx.post(pooled.url + "/batch/", json={"api_key": pooled.token, "batch": []}, timeout=30)
        time.sleep(0.2)
    assert len([c for c in _children(pooled.proc.pid) if c != before[0]]) == 2


def test_sigkill_with_workers_loses_no_acknowledged_event(tmp_path):
    data = tmp_path / "data"
    server = start_server(data, args=["--capture-workers", "2"])
    helpers = _children(server.proc.pid)
    acked, sent = kill_mid_ingestion(server, gzip=True)
    # the helpers see their pipe close and exit by themselves
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in helpers):
        time.sleep(0.1)
    assert not [p for p in helpers if os.path.exists(f"/proc/{p}") and _state(p) != "Z"]
    assert_nothing_acknowledged_lost(data, acked, sent)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
