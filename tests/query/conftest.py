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


# chdb examples: a hypothesis test that opens a fresh store per example pays ClickHouse's schema
# set-up each time, so the chdb parametrization runs a fifth of the examples (at least
# CHDB_MIN_EXAMPLES); DuckDB keeps every example. SIGHTLINE_CHDB_EXAMPLES_DIVISOR=1 runs them all.
CHDB_MIN_EXAMPLES = 3


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    fn = getattr(item, "obj", None)
    current = getattr(fn, "_hypothesis_internal_use_settings", None)
    callspec = getattr(item, "callspec", None)
    if current is None or callspec is None or callspec.params.get("store_engine") != "chdb":
        yield
        return
    from hypothesis import settings

    divisor = max(1, int(os.environ.get("SIGHTLINE_CHDB_EXAMPLES_DIVISOR", "5")))
    capped = settings(current, max_examples=max(CHDB_MIN_EXAMPLES, current.max_examples // divisor))
    fn._hypothesis_internal_use_settings = capped
    try:
        yield
    finally:
        fn._hypothesis_internal_use_settings = current
