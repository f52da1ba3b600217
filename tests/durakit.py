"""Shared by the SIGKILL durability tests: load a live server from several threads, kill it, and
check after a restart that every acknowledged request is stored whole and no request half."""

from __future__ import annotations

import gzip as gzip_
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson

from livesrv import start_server, stop_server


def kill_mid_ingestion(server, *, gzip: bool = False, before_restart=None) -> tuple[list[list[str]], list[list[str]]]:
    """Four threads post 50-event batches until 200 requests are acknowledged (or 20 s), then the
    server gets SIGKILL (no shutdown hook runs). Returns (acknowledged, sent) uuid lists per request."""
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
                body = {"api_key": server.token, "batch": batch}
                try:
                    if gzip:
                        r = c.post("/batch/", content=gzip_.compress(orjson.dumps(body)),
                                   headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
                    else:
                        r = c.post("/batch/", json=body)
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
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 50, "the load never got going"
    return acked, sent


def assert_nothing_acknowledged_lost(data: Path, acked: list[list[str]], sent: list[list[str]]) -> None:
    """Restart on ``data``: every acknowledged event is stored, and each request is all or nothing."""
    restarted = start_server(data)
    try:
        stored = {e["uuid"] for e in restarted.events(event="durable")}
    finally:
        stop_server(restarted)
    missing = [u for ids in acked for u in ids if u not in stored]
    assert not missing, f"{len(missing)} acknowledged events lost"
    for ids in sent:  # no half-written batch
        assert sum(u in stored for u in ids) in (0, len(ids))
