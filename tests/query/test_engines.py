"""DuckDB and ClickHouse side by side: `sightline migrate` copies the demo data into chdb
(resumable, verified), then every query kind must give the same answer on both engines."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

import sightline
from sightline.cli import main

chdb = pytest.importorskip("chdb")

QUERIES = {
    "trends_dau_by_browser": {"kind": "TrendsQuery", "series": [{"event": "$pageview", "math": "dau"}],
                              "interval": "week", "dateRange": {"date_from": "-60d"},
                              "breakdownFilter": {"breakdown": "$browser"}},
    "trends_total_month": {"kind": "TrendsQuery", "series": [{"event": "$pageview"}, {"event": "signed_up"}],
                           "interval": "month", "dateRange": {"date_from": "-90d"}},
    "trends_person_prop": {"kind": "TrendsQuery", "series": [{"event": "$pageview", "math": "total"}],
                           "dateRange": {"date_from": "-30d"},
                           "breakdownFilter": {"breakdown": "plan", "breakdown_type": "person"}},
    "funnel": {"kind": "FunnelsQuery", "series": [{"event": "$pageview"}, {"event": "signed_up"},
                                                   {"event": "purchase"}],
               "dateRange": {"date_from": "-90d"}, "funnelsFilter": {"funnelWindowInterval": 14}},
    "funnel_strict_bd": {"kind": "FunnelsQuery", "series": [{"event": "$pageview"}, {"event": "$pageview"}],
                         "dateRange": {"date_from": "-90d"}, "funnelsFilter": {"funnelOrderType": "strict"},
                         "breakdownFilter": {"breakdown": "$browser"}},
    "retention": {"kind": "RetentionQuery", "dateRange": {"date_to": "dStart"},
                  "retentionFilter": {"period": "Week", "totalIntervals": 8,
                                      "targetEntity": {"id": "$pageview", "type": "events"},
                                      "returningEntity": {"id": "$pageview", "type": "events"}}},
    "lifecycle": {"kind": "LifecycleQuery", "series": [{"event": "$pageview"}], "interval": "week",
                  "dateRange": {"date_from": "-60d"}},
    "stickiness": {"kind": "StickinessQuery", "series": [{"event": "$pageview"}], "dateRange": {"date_from": "-14d"}},
    "paths": {"kind": "PathsQuery", "dateRange": {"date_from": "-30d"}, "pathsFilter": {"stepLimit": 4}},
    "actors": {"kind": "InsightActorsQuery", "limit": 500, "funnelStep": 2,
               "source": {"kind": "FunnelsQuery", "series": [{"event": "$pageview"}, {"event": "signed_up"}],
                          "dateRange": {"date_from": "-90d"}}},
}


def _normalize(value):
    """Round floats (averages of seconds differ in the last bits) and sort actor lists."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items() if k not in ("timings",)}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "data"
    res = CliRunner().invoke(main, ["demo", "--data-dir", str(d), "--events", "4000", "--no-progress"])
    assert res.exit_code == 0, res.output
    return d


@pytest.fixture(scope="module")
def chdb_store(tmp_path_factory):
    # one embedded ClickHouse per process: share the suite's engine, a database of our own
    os.environ.setdefault("SIGHTLINE_CHDB_PATH", str(tmp_path_factory.getbasetemp() / "chdb-engine"))
    return "chdb:?database=migrated_demo"


def test_migrate_copies_verifies_and_resumes(demo_dir, chdb_store):
    runner = CliRunner()
    res = runner.invoke(main, ["migrate", "--from", str(demo_dir), "--to", chdb_store, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    with sightline.open(demo_dir) as s:
        n_events = s.storage.execute("SELECT count(*) FROM events").rows[0][0]
        n_persons = s.storage.execute("SELECT count(*) FROM persons").rows[0][0]
    assert report["ok"] and report["events"] == {"source": n_events, "target": n_events}
    assert report["persons"] == {"source": n_persons, "target": n_persons} and n_persons > 0
    assert report["months_copied"] >= 3 and report["months_skipped"] == 0
    # again: nothing left to copy, still verified
    res = runner.invoke(main, ["migrate", "--from", str(demo_dir), "--to", chdb_store, "--json"])
    again = json.loads(res.output.strip().splitlines()[-1])
    assert res.exit_code == 0 and again["months_copied"] == 0 and again["months_skipped"] == report["months_copied"]
    assert again["events"]["target"] == n_events
    # an interrupted run: one month half-copied and not marked done is redone, not doubled
    from sightline.storage import open_storage

    st = open_storage(demo_dir, store=chdb_store)
    month = st.execute("SELECT max(chunk) FROM migrate_progress FINAL WHERE startsWith(chunk, 'month:')").rows[0][0]
    st.t.command("DELETE FROM migrate_progress WHERE chunk = {c:String}", {"c": month})
    st.t.command("DELETE FROM events WHERE toYYYYMM(timestamp) = {m:Int64} AND cityHash64(uuid) % 2 = 0",
                 {"m": int(month[6:].replace("-", ""))})
    assert st.execute("SELECT count() FROM events").rows[0][0] < n_events
    st.close()
    res = runner.invoke(main, ["migrate", "--from", str(demo_dir), "--to", chdb_store, "--json"])
    third = json.loads(res.output.strip().splitlines()[-1])
    assert res.exit_code == 0 and third["ok"] and third["months_copied"] == 1
    assert third["events"]["target"] == n_events


def test_every_query_kind_agrees_between_engines(demo_dir, chdb_store):
    with sightline.open(demo_dir) as s:
        duck = {name: _normalize(s.query(q).raw)
                for name, q in QUERIES.items()}
    with sightline.open(demo_dir, store=chdb_store) as s:
        if s.storage.execute("SELECT count() FROM events").rows[0][0] == 0:
            pytest.skip("the migration test did not run first")
        click = {name: _normalize(s.query(q).raw)
                 for name, q in QUERIES.items()}
    for name in QUERIES:
        assert click[name] == duck[name], name
    # and the numbers are not trivially empty
    assert sum(r["count"] for r in duck["trends_total_month"]["results"]) > 0
    assert duck["funnel"]["results"][0]["count"] > duck["funnel"]["results"][2]["count"] >= 0
    assert duck["actors"]["results"]
