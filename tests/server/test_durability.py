"""Nothing acknowledged is lost: SIGKILL the server mid-ingestion and count after restart."""

import signal
import threading
import time
import uuid

import httpx

from livesrv import start_server, stop_server


def test_sigkill_during_ingestion_loses_no_acknowledged_event(tmp_path):
    data = tmp_path / "data"
    server = start_server(data)
    acked: list[list[str]] = []
    sent: list[list[str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            n = 0
            while not stop.is_set():
                ids = [str(uuid.uuid4()) for _ in range(50)]
                batch = [{"event": "durable", "distinct_id": f"w{worker}-{i % 5}", "uuid": u,
                          "properties": {"n": n, "worker": worker}} for i, u in enumerate(ids)]
                with lock:
                    sent.append(ids)
                try:
                    r = c.post("/batch/", json={"api_key": server.token, "batch": batch})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acked.append(ids)
                n += 1

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.time() + 20
    while time.time() < deadline and len(acked) < 200:
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGKILL)  # no shutdown hook runs
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 50, "the load never got going"

    restarted = start_server(data)
    try:
        stored = {e["uuid"] for e in restarted.events(event="durable")}
    finally:
        stop_server(restarted)
    missing = [u for ids in acked for u in ids if u not in stored]
    assert not missing, f"{len(missing)} acknowledged events lost"
    # all-or-nothing per request: no half-written batch
    for ids in sent:
        present = sum(u in stored for u in ids)
        assert present in (0, len(ids))


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
