"""Shared fixtures: a real `sightline serve` process on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import pytest

from livesrv import Server, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    """One live server per test module (tests use distinct ids so they do not collide)."""
    srv = start_server(tmp_path_factory.mktemp("srv") / "data")
    yield srv
    stop_server(srv)


@pytest.fixture
def fresh_server(tmp_path) -> Server:
    """A live server with an empty data directory, for tests that count everything."""
    srv = start_server(tmp_path / "data")
    yield srv
    stop_server(srv)
