"""The query API over HTTP and the `sightline query` / `sightline sql` commands."""

import json
import subprocess
import sys
import uuid

import httpx


def test_query_endpoint(server):
    name = f"q-{uuid.uuid4().hex[:8]}"
    batch = [{"event": name, "distinct_id": f"u{i % 3}", "timestamp": "2024-02-01T10:00:00Z"} for i in range(7)]
    assert httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": batch}).status_code == 200
    query = {"kind": "TrendsQuery", "series": [{"event": name, "math": "dau"}],
             "dateRange": {"date_from": "2024-02-01", "date_to": "2024-02-01"}}
    with server.api() as c:
        r = c.post("/api/projects/@current/query/", json={"query": query})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["data"] == [3]
        bad = c.post("/api/projects/@current/query/", json={"query": {**query, "interval": "decade"}})
        assert bad.status_code == 400 and bad.json()["attr"] == "interval"
        assert c.post("/api/projects/@current/query/", content=b"nope").status_code == 400
        assert c.post("/api/projects/@current/query/", json={"q": 1}).status_code == 400
    r = httpx.post(server.url + "/api/projects/@current/query/", json={"query": query},
                   headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 401


def test_query_cli(tmp_path):
    import sightline

    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": "e", "distinct_id": f"u{i}", "timestamp": "2024-02-01T10:00:00Z"} for i in range(4)])
    q = {"kind": "TrendsQuery", "series": [{"event": "e"}], "dateRange": {"date_from": "2024-02-01", "date_to": "2024-02-02"}}
    out = subprocess.run([sys.executable, "-m", "sightline.cli", "query", "--data-dir", str(tmp_path / "d"),
                          "--format", "json"], input=json.dumps(q), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["data"] == [4, 0]
    out = subprocess.run([sys.executable, "-m", "sightline.cli", "query", "--data-dir", str(tmp_path / "d"),
                          "--format", "csv"], input=json.dumps(q), capture_output=True, text=True)
    assert out.stdout.splitlines()[0].startswith("series,") and "2024-02-01,4" in out.stdout
    out = subprocess.run([sys.executable, "-m", "sightline.cli", "query", "--data-dir", str(tmp_path / "d")],
                         input="{not json", capture_output=True, text=True)
    assert out.returncode == 2 and "not JSON" in out.stderr


def test_project_settings_drive_queries(fresh_server):
    srv = fresh_server
    batch = [{"event": "pv", "distinct_id": d, "timestamp": "2024-02-01T23:30:00Z", "properties": {"email": e}}
             for d, e in (("a", "a@mycompany.com"), ("b", "b@customer.com"))]
    assert httpx.post(srv.url + "/batch/", json={"api_key": srv.token, "batch": batch}).status_code == 200
    q = {"kind": "TrendsQuery", "series": [{"event": "pv"}], "filterTestAccounts": True,
         "dateRange": {"date_from": "2024-02-01", "date_to": "2024-02-02"}}
    with srv.api() as c:
        r = c.patch("/api/projects/@current/", json={"timezone": "Europe/Berlin", "test_account_filters": [
            {"key": "email", "value": "@mycompany.com", "operator": "not_icontains", "type": "event"}]})
        assert r.status_code == 200 and r.json()["timezone"] == "Europe/Berlin"
        data = c.post("/api/projects/@current/query/", json={"query": q}).json()["results"][0]["data"]
        assert data == [0, 1]  # 23:30 UTC is the next day in Berlin; the internal user is filtered out
        assert c.patch("/api/projects/@current/", json={"timezone": "Mars/Olympus"}).status_code == 400
        assert c.patch("/api/projects/@current/", json={"colour": "red"}).status_code == 400


def test_sql_through_query_api_and_cli(server, tmp_path):
    name = f"sql-{uuid.uuid4().hex[:8]}"
    batch = [{"event": name, "distinct_id": f"u{i}", "properties": {"$browser": "Chrome" if i % 2 else "Safari"}}
             for i in range(6)]
    assert httpx.post(server.url + "/batch/", json={"api_key": server.token, "batch": batch}).status_code == 200
    sql = f"SELECT properties.$browser AS b, count() AS n FROM events WHERE event = '{name}' GROUP BY 1 ORDER BY 1"
    with server.api() as c:
        r = c.post("/api/projects/@current/query/", json={"query": {"kind": "HogQLQuery", "query": sql}})
        assert r.status_code == 200, r.text
        assert r.json()["columns"] == ["b", "n"] and r.json()["results"] == [["Chrome", 3], ["Safari", 3]]
        bad = c.post("/api/projects/@current/query/", json={"query": {"kind": "HogQLQuery",
                                                                      "query": "DELETE FROM events"}})
        assert bad.status_code == 400 and bad.json()["code"] == "sql_statement_not_allowed"
    import sightline

    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": "e", "distinct_id": "x"}])
    out = subprocess.run([sys.executable, "-m", "sightline.cli", "sql", "SELECT count() AS n FROM events",
                          "--data-dir", str(tmp_path / "d"), "--format", "csv"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["n", "1"]
    out = subprocess.run([sys.executable, "-m", "sightline.cli", "sql", "DROP TABLE events",
                          "--data-dir", str(tmp_path / "d")], capture_output=True, text=True)
    assert out.returncode == 2 and "Error" in out.stderr
