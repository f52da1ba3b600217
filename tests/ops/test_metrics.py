"""Observability on a live server: `GET /metrics` in Prometheus text format (checked with
prometheus_client's parser) and `serve --json-logs` writing one JSON object per line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from livesrv import API_KEY, ROOT, TOKEN, free_port


def _scrape(server) -> dict:
    with server.api() as c:
        r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    # every family has HELP and TYPE lines
    for name, fam in families.items():
        assert fam.documentation, name
        assert fam.type in ("counter", "gauge", "histogram"), (name, fam.type)
    return families


def _value(families, family, sample_name, **labels) -> float:
    for s in families[family].samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {sample_name} {labels} in {family}")


def test_metrics_count_capture_queries_flags_and_batches(fresh_server):
    server = fresh_server
    assert httpx.get(server.url + "/metrics").status_code == 401  # secret key only
    before = _scrape(server)
    assert _value(before, "sightline_events_received", "sightline_events_received_total") == 0
    assert before["sightline_write_batch_events"].type == "histogram"

    good = [{"event": "m_view", "distinct_id": f"u{i}", "properties": {}} for i in range(5)]
    bad = [{"distinct_id": "u9", "properties": {}},                       # no event name
           {"event": "m_view", "properties": {}},                          # no distinct id
           {"event": "m_view", "distinct_id": "u8", "properties": "nope"}]  # properties not an object
    r = httpx.post(server.url + "/batch/", json={"api_key": TOKEN, "batch": good + bad})
    assert r.status_code == 200, r.text
    r = httpx.post(server.url + "/batch/", json={"api_key": TOKEN, "batch": good[:2]})
    assert r.status_code == 200
    r = httpx.post(server.url + "/batch/", json={"api_key": "phc_wrong", "batch": good[:1]})
    assert r.status_code == 401

    with server.api() as c:
        r = c.post("/api/projects/@current/feature_flags/",
                   json={"key": "metrics-flag", "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}})
        assert r.status_code == 201, r.text
        for i in range(3):
            r = httpx.post(server.url + "/flags/?v=2", json={"token": TOKEN, "distinct_id": f"f{i}"})
            assert r.status_code == 200 and r.json()["flags"]["metrics-flag"]["enabled"]
        q = c.post("/api/projects/@current/query/", json={"query": {"kind": "TrendsQuery",
                                                                    "series": [{"event": "m_view"}]}})
        assert q.status_code == 200, q.text
        for _ in range(2):
            q = c.post("/api/projects/@current/query/",
                       json={"query": {"kind": "HogQLQuery", "query": "SELECT count() FROM events"}})
            assert q.status_code == 200, q.text
        assert q.json()["results"][0][0] == 7  # 5 + 2 valid events stored
        q = c.post("/api/projects/@current/query/",
                   json={"query": {"kind": "HogQLQuery", "query": "SELECT nope FROM nowhere"}})
        assert q.status_code >= 400

    m = _scrape(server)
    assert _value(m, "sightline_events_received", "sightline_events_received_total") == 8 + 2
    assert _value(m, "sightline_events_accepted", "sightline_events_accepted_total") == 5 + 2
    rejected = {s.labels["reason"]: s.value for s in m["sightline_events_rejected"].samples}
    assert rejected == {"missing_event_name": 1, "missing_distinct_id": 1, "invalid_properties": 1}
    assert _value(m, "sightline_capture_errors", "sightline_capture_errors_total", code="invalid_token") == 1
    assert _value(m, "sightline_flag_evaluations", "sightline_flag_evaluations_total") == 3
    assert _value(m, "sightline_flag_requests", "sightline_flag_requests_total") == 3
    # histograms: every stored event went through one group commit
    batch_sum = _value(m, "sightline_write_batch_events", "sightline_write_batch_events_sum")
    batch_count = _value(m, "sightline_write_batch_events", "sightline_write_batch_events_count")
    assert batch_sum == 7 and 1 <= batch_count <= 2
    assert _value(m, "sightline_write_batch_events", "sightline_write_batch_events_bucket", le="+Inf") == batch_count
    fam = "sightline_query_duration_seconds"
    assert _value(m, fam, fam + "_count", kind="TrendsQuery") == 1
    assert _value(m, fam, fam + "_count", kind="HogQLQuery") == 3
    buckets = [s for s in m[fam].samples if s.name == fam + "_bucket" and s.labels["kind"] == "HogQLQuery"]
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative
    assert _value(m, "sightline_queries_failed", "sightline_queries_failed_total", kind="HogQLQuery") == 1
    lag = _value(m, "sightline_ingestion_lag_seconds", "sightline_ingestion_lag_seconds")
    assert m["sightline_ingestion_lag_seconds"].type == "gauge" and lag >= 0


def test_json_logs_are_one_object_per_line(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    env = {**os.environ, "SIGHTLINE_PROJECT_TOKEN": TOKEN, "SIGHTLINE_API_KEY": API_KEY}
    err_path = tmp_path / "stderr.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sightline.cli", "serve", "--data-dir", str(data),
                                 "--port", str(port), "--log-level", "info", "--json-logs"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(url + "/_health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, err_path.read_text()
                time.sleep(0.05)
            r = httpx.post(url + "/batch/", json={"api_key": TOKEN,
                                                  "batch": [{"event": "e", "distinct_id": "u", "properties": {}}]})
            assert r.status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    lines = [ln for ln in err_path.read_text().splitlines() if ln.strip()]
    assert len(lines) >= 2, lines  # at least uvicorn's start-up and our shutdown record
    records = [json.loads(ln) for ln in lines]  # raises on any line that is not JSON
    for rec in records:
        assert isinstance(rec, dict) and {"ts", "level", "logger", "message"} <= set(rec)
    assert any(rec["logger"] == "sightline.web" and "shutting down" in rec["message"] for rec in records)
