"""Test helpers: start a real `sightline serve` process on 127.0.0.1 and read back what it stored."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

TOKEN = "phc_test_project_token"
API_KEY = "phx_test_secret_key"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    data_dir: Path
    token: str
    api_key: str
    proc: subprocess.Popen
    log_path: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.api_key}"},
                            timeout=30)

    def events(self, **params) -> list[dict]:
        """Every stored event matching ``params`` (follows pagination)."""
        out: list[dict] = []
        with self.api() as c:
            url = "/api/projects/@current/events/"
            p = {"limit": 1000, **params}
            while url:
                r = c.get(url, params=p)
                assert r.status_code == 200, r.text
                body = r.json()
                out += body["results"]
                url, p = body["next"], None
        return out

    def persons(self, **params) -> list[dict]:
        with self.api() as c:
            r = c.get("/api/projects/@current/persons/", params={"limit": 1000, **params})
            assert r.status_code == 200, r.text
            return r.json()["results"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(data_dir: Path, port: int | None = None, extra_env: dict | None = None,
                 args: list[str] | None = None) -> Server:
    port = port or free_port()
    env = {**os.environ, "SIGHTLINE_PROJECT_TOKEN": TOKEN, "SIGHTLINE_API_KEY": API_KEY,
           **(extra_env or {})}
    log_path = data_dir.parent / f"server-{port}.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sightline.cli", "serve", "--data-dir", str(data_dir),
         "--port", str(port), "--log-level", "warning", *(args or [])],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/_health", timeout=1).status_code == 200:
                return Server(url, data_dir, TOKEN, API_KEY, proc, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not become healthy:\n{log_path.read_text()}")


def stop_server(server: Server, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


