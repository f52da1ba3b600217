"""Run the query correctness suites on both engines: DuckDB and ClickHouse (in process, chdb).

Modules listed in ``BOTH_ENGINES`` run every test twice (ids ``[duckdb]`` / ``[chdb]``); the
store is chosen through ``SIGHTLINE_STORE``, which ``sightline.open`` reads, so the tests
themselves stay engine-agnostic. chdb runs one embedded ClickHouse per process:
``SIGHTLINE_CHDB_PATH`` points every data directory at one engine (a database each).
Select one engine with ``-k duckdb`` or ``-k chdb``; ``SIGHTLINE_TEST_ENGINES=duckdb`` skips chdb.
"""

from __future__ import annotations

import os

import pytest

BOTH_ENGINES = {"test_trends", "test_funnels", "test_paths", "test_actors", "test_cohort_queries", "test_sql"}


def _engines() -> list[str]:
    wanted = os.environ.get("SIGHTLINE_TEST_ENGINES", "duckdb,chdb").split(",")
    if "chdb" in wanted:
        try:
            import chdb  # noqa: F401
        except ImportError:
            wanted = [e for e in wanted if e != "chdb"]
    return [e for e in wanted if e in ("duckdb", "chdb")]


def pytest_generate_tests(metafunc):
    if "store_engine" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_ENGINES:
        metafunc.parametrize("store_engine", _engines(), indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def store_engine(request, tmp_path_factory):
    """The engine this module's tests run on (``duckdb`` unless parametrized)."""
    engine = getattr(request, "param", "duckdb")
    saved = {k: os.environ.get(k) for k in ("SIGHTLINE_STORE", "SIGHTLINE_CHDB_PATH")}
    if engine == "chdb":
        os.environ["SIGHTLINE_STORE"] = "chdb"
        os.environ["SIGHTLINE_CHDB_PATH"] = str(tmp_path_factory.getbasetemp() / "chdb-engine")
    else:
        os.environ.pop("SIGHTLINE_STORE", None)
    yield engine
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
