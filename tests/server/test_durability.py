"""Nothing acknowledged is lost: SIGKILL the server mid-ingestion and count after restart."""

import signal
import uuid

import httpx

from durakit import assert_nothing_acknowledged_lost, kill_mid_ingestion
from livesrv import start_server, stop_server


def test_sigkill_during_ingestion_loses_no_acknowledged_event(tmp_path):
    data = tmp_path / "data"
    acked, sent = kill_mid_ingestion(start_server(data))
    assert_nothing_acknowledged_lost(data, acked, sent)


def test_sigterm_flushes_and_exits_cleanly(tmp_path):
    data = tmp_path / "data"
    server = start_server(data)
    ids = [str(uuid.uuid4()) for _ in range(300)]
    r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": [
        {"event": "graceful", "distinct_id": "d", "uuid": u} for u in ids]})
    assert r.status_code == 200
    assert stop_server(server, signal.SIGTERM) == 0
    assert not (data / "events.duckdb.wal").exists() or (data / "events.duckdb.wal").stat().st_size == 0
    restarted = start_server(data)
    try:
        assert {e["uuid"] for e in restarted.events(event="graceful")} == set(ids)
    finally:
        stop_server(restarted)


def test_acknowledged_events_only_in_the_log_are_replayed_after_a_crash(tmp_path):
    """With flushing held back, a SIGKILL leaves events only in the ingestion log; restart stores them."""
    data = tmp_path / "data"
    server = start_server(data, extra_env={"SIGHTLINE_FLUSH_INTERVAL": "3600"})
    ids = [str(uuid.uuid4()) for _ in range(500)]
    for chunk in range(0, 500, 100):
        r = httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": [
            {"event": "logged", "distinct_id": f"u{i % 7}", "uuid": u, "$set": {"n": i}}
            for i, u in enumerate(ids[chunk:chunk + 100], start=chunk)]})
        assert r.status_code == 200
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    assert any((data / "wal").glob("*.log"))
    restarted = start_server(data)
    try:
        assert {e["uuid"] for e in restarted.events(event="logged")} == set(ids)
        assert len(restarted.persons(distinct_id="u3")) == 1
    finally:
        stop_server(restarted)
