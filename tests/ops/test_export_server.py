"""`sightline export` while `sightline serve` runs: the server streams the file
(``GET /api/projects/{id}/export/``), the CLI writes it; the rows are the events that were sent,
in time order; errors are precise; and once the server stops, the CLI reads the data directory
itself and writes the very same file."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow.parquet as pq
import pytest
from livesrv import ROOT, start_server, stop_server

NOW = datetime.now(UTC).replace(microsecond=0)
EVENTS = ("exp_view", "exp_buy", "exp_other")


def _sent(n: int = 700) -> list[dict]:
    out = []
    for i in range(n):
        out.append({"event": EVENTS[i % 3], "distinct_id": f"user-{i % 23}", "uuid": str(uuid.UUID(int=10**6 + i)),
                    "timestamp": (NOW - timedelta(days=(i * 7) % 40, minutes=i % 60 + 1)).isoformat(),
                    "properties": {"i": i, "label": f"row {i}", "nested": {"k": [i, "x"]}}})
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data = tmp_path_factory.mktemp("export-live") / "data"
    server = start_server(data)
    sent = _sent()
    for k in range(0, len(sent), 250):
        r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": sent[k:k + 250]}, timeout=30)
        assert r.status_code == 200, r.text
    yield server, sent
    stop_server(server)


def _ts(e: dict) -> datetime:
    return datetime.fromisoformat(e["timestamp"])


def _want(sent: list[dict], events=EVENTS, after: datetime | None = None) -> list[dict]:
    rows = [e for e in sent if e["event"] in events and (after is None or _ts(e) >= after)]
    return sorted(rows, key=lambda e: (_ts(e), e["uuid"]))


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sightline.cli", "export", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


def _check_jsonl(lines: list[dict], want: list[dict]) -> None:
    assert [g["uuid"] for g in lines] == [e["uuid"] for e in want]          # in time order
    assert [g["properties"]["i"] for g in lines] == [e["properties"]["i"] for e in want]
    assert all(g["properties"]["nested"] == e["properties"]["nested"] for g, e in zip(lines, want))
    assert [g["event"] for g in lines] == [e["event"] for e in want]
    assert [g["distinct_id"] for g in lines] == [e["distinct_id"] for e in want]
    assert [datetime.fromisoformat(g["timestamp"]) for g in lines] == [_ts(e) for e in want]


def test_the_endpoint_checks_its_input(live):
    server, _ = live
    url = "/api/projects/@current/export/"
    assert httpx.get(server.url + url).status_code == 401
    r = httpx.get(server.url + url, headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 401 and r.json()["code"] == "project_token_not_allowed"
    with server.api() as c:
        for params, attr in (({"format": "csv"}, "format"), ({"limit": "5"}, "limit"),
                             ({"before": "last tuesday"}, "before"), ({"after": "soon"}, "after")):
            r = c.get(url, params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["attr"] == attr and r.json()["detail"]
        r = c.get("/api/projects/999/export/")
        assert r.status_code == 404 and "does not exist" in r.json()["detail"]


def test_the_endpoint_streams_json_lines(live):
    server, sent = live
    after = NOW - timedelta(days=20)
    params = [("event", "exp_view"), ("event", "exp_buy"), ("after", after.isoformat())]
    with server.api() as c, c.stream("GET", "/api/projects/@current/export/", params=params) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        planned = int(r.headers["x-sightline-export-rows"])
        body = b"".join(r.iter_bytes())
    lines = [json.loads(x) for x in body.splitlines()]
    want = _want(sent, ("exp_view", "exp_buy"), after)
    assert len(want) > 100 and planned == len(want)
    _check_jsonl(lines, want)


def test_cli_exports_through_the_server_then_directly(live, tmp_path):
    server, sent = live
    data = server.data_dir
    # JSON lines, one event, relative bound: through the running server
    r = _cli(tmp_path / "s.jsonl", "--data-dir", data, "--event", "exp_buy", "--after", "-30d")
    assert r.returncode == 0, r.stderr
    assert "through the running server" in r.stderr
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    # the bound is 30 days before the moment of the export: no event is within minutes of it
    want = _want(sent, ("exp_buy",), NOW - timedelta(days=30))
    assert len(want) > 50 and f"Exported {len(want):,} events to {tmp_path / 's.jsonl'} (jsonl)." in r.stdout
    _check_jsonl(lines, want)
    # Parquet, everything
    r = _cli(tmp_path / "s.parquet", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    table = pq.read_table(tmp_path / "s.parquet")
    everything = _want(sent)
    assert f"Exported {len(everything):,} events" in r.stdout
    assert table.column("uuid").to_pylist() == [e["uuid"] for e in everything]
    assert [json.loads(p)["label"] for p in table.column("properties").to_pylist()] == \
        [e["properties"]["label"] for e in everything]
    # errors from the server: precise, exit 2, no file left behind
    for args, text in ((("--project", "99"), "does not exist"), (("--before", "last tuesday"), "before")):
        r = _cli(tmp_path / "bad.jsonl", "--data-dir", data, *args)
        assert r.returncode == 2 and text in r.stderr, r.stderr
        assert not (tmp_path / "bad.jsonl").exists() and not (tmp_path / "bad.jsonl.partial").exists()

    # the server stops: the CLI opens the data directory itself and writes the same files
    assert stop_server(server) == 0
    r = _cli(tmp_path / "d.jsonl", "--data-dir", data, "--event", "exp_buy", "--after", "-30d")
    assert r.returncode == 0, r.stderr
    assert "running server" not in r.stderr
    assert (tmp_path / "d.jsonl").read_bytes() == (tmp_path / "s.jsonl").read_bytes()
    r = _cli(tmp_path / "d.parquet", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "d.parquet").equals(table)


def test_a_stream_cut_short_is_an_error_and_leaves_no_file(tmp_path):
    """A server that fails in the middle of an export ends the connection without the chunked
    body's last chunk: the client says so and keeps no partial file."""
    import socket
    import threading

    from sightline.ops.control import ServerError, ServerHandle
    from sightline.ops.export import download

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            line = b'{"uuid": "u1"}\n'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
                         b"X-Sightline-Export-Rows: 5\r\n\r\n" + f"{len(line):x}\r\n".encode() + line + b"\r\n")

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    handle = ServerHandle(f"http://127.0.0.1:{listener.getsockname()[1]}", "phx_control_x", 0)
    with pytest.raises(ServerError, match="before its end"):
        download(handle, tmp_path / "cut.jsonl", fmt="jsonl", timeout=10)
    thread.join(5)
    listener.close()
    assert not (tmp_path / "cut.jsonl").exists() and not (tmp_path / "cut.jsonl.partial").exists()
