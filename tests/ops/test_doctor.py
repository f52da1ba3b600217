"""`sightline doctor`: every check against a live server and the CLI, with OK/WARN/FAIL and fixes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from livesrv import ROOT, start_server, stop_server
from sightline.ops import doctor
from sightline.ops.migrations import CURRENT_VERSION


def _doctor(data, *extra: str, env: dict | None = None) -> tuple[int, dict]:
    res = subprocess.run([sys.executable, "-m", "sightline.cli", "doctor", "--data-dir", str(data), "--json", *extra],
                         capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})
    body = json.loads(res.stdout)
    return res.returncode, {c["name"]: c for c in body["checks"]} | {"_ok": body["ok"]}


def test_doctor_with_a_running_server_then_stopped_and_broken(tmp_path):
    data = tmp_path / "data"
    clean = {"SIGHTLINE_DUCKDB_MEMORY_LIMIT": None, "SIGHTLINE_FLUSH_INTERVAL": None, "SIGHTLINE_PORT": None,
             "SIGHTLINE_DUCKDB_CHECKPOINT_THRESHOLD": None, "SIGHTLINE_PROJECT_TOKEN": None}
    env = {k: v for k, v in os.environ.items() if k not in clean}
    srv = start_server(data)
    try:
        code, checks = _doctor(data, env=clean)
        assert code == 0 and checks["_ok"], checks
        assert checks["server"]["status"] == "ok" and str(srv.proc.pid) in checks["server"]["detail"]
        assert checks["ingestion lag"]["status"] == "ok"
        assert checks["schema"]["status"] == "ok" and str(CURRENT_VERSION) in checks["schema"]["detail"]
        assert checks["data directory"]["status"] == "ok"
        assert checks["API keys"]["status"] == "ok"
        # the human form: one line per check with its status
        res = subprocess.run([sys.executable, "-m", "sightline.cli", "doctor", "--data-dir", str(data)],
                             capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
        assert res.returncode == 0 and "[  OK] server" in res.stdout
    finally:
        stop_server(srv)

    # stopped: no server; bad settings and a newer schema are failures with a fix each
    code, checks = _doctor(data, env={**clean, "SIGHTLINE_DUCKDB_MEMORY_LIMIT": "lots",
                                      "SIGHTLINE_FLUSH_INTERVAL": "-1"})
    assert code == 1 and not checks["_ok"]
    assert checks["server"]["status"] == "ok" and "No server" in checks["server"]["detail"]
    assert checks["DuckDB memory"]["status"] == "fail" and "4GB" in checks["DuckDB memory"]["fix"]
    assert checks["configuration"]["status"] == "fail" and "SIGHTLINE_FLUSH_INTERVAL" in checks["configuration"]["detail"]

    con = sqlite3.connect(data / "meta.sqlite")
    con.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
    con.execute("DELETE FROM api_keys")
    con.commit()
    con.close()
    code, checks = _doctor(data, env=clean)
    assert code == 1
    assert checks["schema"]["status"] == "fail" and "Upgrade Sightline" in checks["schema"]["fix"]
    assert checks["API keys"]["status"] == "warn" and "sightline keys create" in checks["API keys"]["fix"]

    # a directory that does not exist
    code, checks = _doctor(tmp_path / "nope", env=clean)
    assert code == 1 and checks["data directory"]["status"] == "fail"


def test_doctor_thresholds_and_human_output(tmp_path):
    import sightline

    data = tmp_path / "d"
    with sightline.open(data) as s:
        s.capture("e", "u")
    # a disk "too small" for the thresholds, a big ingestion log: warnings, not failures
    (data / "wal" / "00000099.log").write_bytes(b"\0" * 4096)
    t = doctor.Thresholds(disk_free_bytes=1 << 62, log_warn_bytes=1024)
    checks = doctor.run(data, env={"SIGHTLINE_DUCKDB_MEMORY_LIMIT": "100MB"}, thresholds=t, handle=None)
    by = {c.name: c for c in checks}
    assert by["disk space"].status == "warn" and by["disk space"].fix
    assert by["ingestion log"].status == "warn"
    assert by["DuckDB memory"].status == "warn"
    assert doctor.to_json(checks)["ok"] is True
    text = doctor.render(checks)
    assert "[WARN] disk space" in text and "→ Free space" in text and "warning(s)" in text
    assert doctor.parse_size("4GB") == 4 * 1000 ** 3 and doctor.parse_size("512MiB") == 512 * 1024 ** 2
    assert doctor.parse_size("lots") is None
