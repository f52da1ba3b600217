"""The control channel: the CLI finds the running server of a data directory and talks to it."""

from __future__ import annotations

import json
import os
import stat

import pytest

from livesrv import start_server, stop_server
from sightline.ops import control


def test_cli_reaches_the_running_server_and_forgets_it_after_stop(tmp_path):
    data = tmp_path / "data"
    srv = start_server(data)
    try:
        token_file = data / "run" / "control-token"
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        handle = control.running_server(data)
        assert handle is not None and handle.url == srv.url and handle.pid == srv.proc.pid
        # the control token is accepted like a secret key...
        project = handle.request("GET", "/api/projects/@current/")
        assert project["api_token"] == srv.token
        # ...errors come back as ServerError with the server's code
        with pytest.raises(control.ServerError) as err:
            handle.request("GET", "/api/projects/999/")
        assert err.value.status == 404 and err.value.code == "not_found"
        # and a wrong token is refused
        bad = control.ServerHandle(handle.url, "phx_control_wrong", handle.pid)
        with pytest.raises(control.ServerError) as err:
            bad.request("GET", "/api/projects/@current/")
        assert err.value.status == 401
    finally:
        assert stop_server(srv) == 0
    assert not (data / "run" / "server.json").exists()
    assert control.running_server(data) is None


def test_a_stale_server_file_is_ignored(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "server.json").write_text(json.dumps({"pid": 2 ** 22 + 12345, "url": "http://127.0.0.1:9"}))
    (run / "control-token").write_text("phx_control_x")
    assert control.running_server(tmp_path, wait_s=0) is None


def test_exclusive_jobs_see_everything_stored_and_may_purge_the_log(tmp_path):
    import sightline

    with sightline.open(tmp_path / "d") as core:
        core.capture("e1", "u1")
        before = sorted((tmp_path / "d" / "wal").glob("*.log"))
        seen = core.writer.run_exclusive(
            lambda identity: core.storage.execute("SELECT count(*) FROM events").rows[0][0], purge_log=True)
        assert seen == 1
        after = sorted((tmp_path / "d" / "wal").glob("*.log"))
        assert after and after[0].name > before[-1].name  # old segments are gone
        with pytest.raises(KeyError):
            core.writer.run_exclusive(lambda identity: {}["missing"])
        core.capture("e2", "u1")  # the writer still works after a failed job
        assert core.storage.execute("SELECT count(*) FROM events").rows[0][0] == 2
