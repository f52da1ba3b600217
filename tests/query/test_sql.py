"""Read-only user SQL: results against plain Python, the conveniences, every refused construct,
project isolation, the time limit, and a fuzz that nothing but a refusal ever escapes."""

import json
import random
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sightline
from sightline.errors import InvalidInput
from sightline.query.sql import (FUNCTIONS, OPERATORS, TABLE_FUNCTIONS, PreparedSQL, SQLRejected, SQLResult,
                                 _duckdb_check, prepare_sql, run_sql)

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 9, tzinfo=UTC)
BROWSERS = ["Chrome", "Firefox", "Safari"]


def iso(t):
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def db(tmp_path_factory, store_engine):
    """Project 1: 150 random events of 6 users (two anonymous ids merged later); project 2: 7 events."""
    s = sightline.open(tmp_path_factory.mktemp("sql") / "d")
    other = s.meta.create_project("Other project")
    rnd = random.Random(7)
    raw = []
    for i in range(150):
        props = {"$browser": rnd.choice(BROWSERS), "$session_id": f"s{i // 5}",
                 "$current_url": f"https://app.io/p{i % 4}?x={i}", "price": rnd.randint(1, 50)}
        if i % 3 == 0:
            props["plan"] = rnd.choice(["free", "pro"])
        if i % 10 == 0:
            props["utm campaign"] = "spring sale"
            props["$set"] = {"plan": "nested"}
        raw.append({"event": rnd.choice(["$pageview", "$autocapture", "signed_up"]),
                    "distinct_id": rnd.choice(["anon-a", "anon-b", "u1", "u2", "u3", "u4"]),
                    "timestamp": iso(T0 + timedelta(minutes=i, seconds=rnd.random())), "properties": props})
    s.ingest(raw)
    s.ingest([
        {"event": "$identify", "distinct_id": "u1", "timestamp": iso(T0 + timedelta(days=1)),
         "properties": {"$anon_distinct_id": "anon-a", "$set": {"email": "u1@x.io"}}},
        {"event": "$identify", "distinct_id": "u2", "timestamp": iso(T0 + timedelta(days=1)),
         "properties": {"$anon_distinct_id": "anon-b", "$set": {"email": "u2@x.io"}}},
    ])
    other_raw = [{"event": "secret_event", "distinct_id": f"other-{i}", "timestamp": iso(T0 + timedelta(minutes=i)),
                  "properties": {"$session_id": "s0", "$browser": "Opera", "$set": {"email": f"o{i}@x.io"}}}
                 for i in range(7)]
    s.ingest(other_raw, project_id=other.id)
    s.raw = raw + [{"event": "$identify", "distinct_id": d} for d in ("u1", "u2")]
    s.other_id = other.id
    yield s
    s.close()


def q(s, sql, project_id=None, **kw) -> SQLResult:
    return run_sql(s.storage, project_id or s.project.id, sql, **kw)


def total_rows(s):
    return s.storage.execute("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM persons) "
                             "+ (SELECT count(*) FROM person_distinct_ids) + (SELECT count(*) FROM person_overrides)"
                             ).rows[0][0]


# -- results against plain Python --------------------------------------------------------------

def test_select_rows_match_ingested_events(db, store_engine):
    res = q(db, "SELECT event, distinct_id, timestamp, properties FROM events "
                "WHERE event <> '$identify' ORDER BY timestamp LIMIT 1000")
    assert res.columns == ["event", "distinct_id", "timestamp", "properties"]
    assert res.types[:3] == ["VARCHAR", "VARCHAR", "TIMESTAMP WITH TIME ZONE"]
    assert not res.truncated and len(res.results) == 150
    expected = sorted(db.raw[:150], key=lambda e: e["timestamp"])
    for row, e in zip(res.results, expected):
        assert row[0] == e["event"] and row[1] == e["distinct_id"]
        assert datetime.fromisoformat(row[2].replace("Z", "+00:00")) == \
            datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        assert row[2].endswith("Z")
        assert json.loads(row[3])["price"] == e["properties"]["price"]


def test_group_by_counts_match_python(db, store_engine):
    res = q(db, "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event")
    expected = Counter(e["event"] for e in db.raw)
    assert res.results == sorted([[k, v] for k, v in expected.items()])
    # ClickHouse's count() is unsigned
    assert res.types == ["VARCHAR", "BIGINT" if store_engine == "duckdb" else "UBIGINT"]


def test_aggregates_over_properties_match_python(db):
    res = q(db, "SELECT sum(CAST(properties.price AS INTEGER)), avg(properties.price::DOUBLE), "
                "max(properties.price::INT), count(DISTINCT properties.$browser) FROM events")
    prices = [e["properties"]["price"] for e in db.raw[:150]]
    [[total, mean, top, browsers]] = res.results
    assert (total, top, browsers) == (sum(prices), max(prices), 3)
    assert mean == pytest.approx(sum(prices) / len(prices))


def test_property_access_forms(db):
    res = q(db, "SELECT properties.$browser AS b, count(*) FROM events WHERE event <> '$identify' "
                "GROUP BY b ORDER BY b")
    assert res.results == sorted([[b, n] for b, n in Counter(e["properties"]["$browser"] for e in db.raw[:150]).items()])
    expected_plan = Counter(e["properties"].get("plan") for e in db.raw[:150])
    for form in ["properties.plan", "e.properties.plan", "properties->>'plan'", "properties.\"plan\"",
                 "json_extract_string(properties, '$.plan')"]:
        res = q(db, f"SELECT {form} AS plan, count(*) FROM events e WHERE event <> '$identify' GROUP BY 1")
        assert {r[0]: r[1] for r in res.results} == dict(expected_plan), form
    # `$` keys, quoted keys, nested keys, DuckDB's operator with a `$key`
    res = q(db, "SELECT properties->>'$browser', properties.\"utm campaign\", properties.$set.plan, "
                "e.properties.$current_url FROM events e ORDER BY timestamp LIMIT 1")
    first = db.raw[0]["properties"]
    assert res.results == [[first["$browser"], "spring sale", "nested", first["$current_url"]]]
    assert res.columns[1:3] == ["properties.utm campaign", "properties.$set.plan"]


def test_person_properties_follow_merges(db):
    res = q(db, "SELECT distinct_id, person.properties.email FROM events "
                "WHERE distinct_id IN ('anon-a', 'u1', 'anon-b') GROUP BY ALL ORDER BY 1")
    assert res.results == [["anon-a", "u1@x.io"], ["anon-b", "u2@x.io"], ["u1", "u1@x.io"]]
    res = q(db, "SELECT e.person.properties.email AS email, count(DISTINCT person_id) FROM events e "
                "WHERE distinct_id IN ('anon-a', 'u1') GROUP BY 1")
    assert res.results == [["u1@x.io", 1]]
    res = q(db, "SELECT properties.email FROM persons WHERE properties.email IS NOT NULL ORDER BY 1")
    assert res.results == [["u1@x.io"], ["u2@x.io"]]


def test_unique_persons_after_merge(db):
    [[n]] = q(db, "SELECT count(DISTINCT person_id) FROM events").results
    assert n == 4  # anon-a → u1, anon-b → u2
    [[n]] = q(db, "SELECT count(*) FROM persons").results
    assert n == 4
    res = q(db, "SELECT p.properties.email, count(*) FROM events e JOIN persons p ON p.id = e.person_id "
                "WHERE e.distinct_id IN ('u1', 'anon-a') GROUP BY 1")
    assert res.results == [["u1@x.io", sum(e["distinct_id"] in ("u1", "anon-a") for e in db.raw)]]


def test_set_operations_ctes_and_subqueries(db, store_engine):
    res = q(db, "WITH b AS (SELECT DISTINCT properties.$browser AS b FROM events WHERE event = '$pageview') "
                "SELECT b FROM b UNION ALL SELECT 'Lynx' ORDER BY 1")
    assert [r[0] for r in res.results] == sorted(BROWSERS + ["Lynx"])
    assert q(db, "SELECT 1 INTERSECT SELECT 1").results == [[1]]
    assert q(db, "SELECT 1 EXCEPT SELECT 1").results == []
    assert q(db, "(SELECT 2) UNION ALL (SELECT 1) ORDER BY 1 LIMIT 1").results == [[1]]
    assert q(db, "FROM events SELECT count(*)").results == [[len(db.raw)]]
    res = q(db, "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) "
                "SELECT n, (SELECT count(*) FROM persons) FROM t ORDER BY n")
    assert res.results == [[1, 4], [2, 4], [3, 4]]
    if store_engine == "chdb":  # table functions are DuckDB's only (documented)
        for sql in ["SELECT x FROM range(3) r(x)", "SELECT key FROM events, json_each(properties)"]:
            with pytest.raises(SQLRejected) as err:
                q(db, sql)
            assert err.value.code == "sql_unsupported" and "ClickHouse" in err.value.detail
        return
    res = q(db, "SELECT x, count(*) FROM range(3) r(x), generate_series(1, 2) g GROUP BY x ORDER BY x")
    assert res.results == [[0, 2], [1, 2], [2, 2]]
    res = q(db, "SELECT key FROM events, json_each(properties) WHERE event = '$identify' ORDER BY 1")
    assert "$anon_distinct_id" in [r[0] for r in res.results]


def test_sessions_table_spec_vector(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        def pv(e, d, sid, sec, path):
            return {"event": e, "distinct_id": d, "timestamp": iso(T0 + timedelta(seconds=sec)),
                    "properties": {"$session_id": sid, "$current_url": "https://x.io" + path}}
        s.ingest([pv("$pageview", "u1", "s1", 0, "/a"), pv("$pageview", "u1", "s1", 30, "/b"),
                  pv("$pageview", "u2", "s2", 100, "/a"), pv("$pageleave", "u2", "s2", 105, "/a"),
                  pv("$pageview", "u2", "s3", 200, "/c"), pv("$autocapture", "u2", "s3", 203, "/c"),
                  pv("$pageview", "u3", "s4", 300, "/a"), pv("$pageleave", "u3", "s4", 315, "/a")])
        res = q(s, "SELECT count(DISTINCT person_id) AS visitors, sum($pageview_count + $screen_count) AS views, "
                   "count(*) AS sessions, avg($session_duration) AS duration, "
                   "avg($is_bounce::INT) * 100 AS bounce_rate FROM sessions")
        assert res.results == [[3, 5, 4, 13.25, 25.0]]
        res = q(s, "SELECT s.$entry_pathname, s.$end_pathname FROM sessions s WHERE session_id = 's1'")
        assert res.results == [["/a", "/b"]]
        res = q(s, "SELECT e.event, s.\"$is_bounce\" FROM events e JOIN sessions s USING (session_id) "
                   "WHERE e.distinct_id = 'u3' ORDER BY e.timestamp")
        assert res.results == [["$pageview", False], ["$pageleave", False]]


def test_values_are_json_friendly(db, store_engine):
    if store_engine == "chdb":
        res = q(db, "SELECT uuid, person_id, timestamp, 1.5::DECIMAL(4,2) AS d, DATE '2024-01-02' AS day, "
                    "[1, 2] AS l, 'nan'::DOUBLE AS nan, 'ab'::BLOB AS blob FROM events ORDER BY timestamp LIMIT 1")
        [row] = res.results
        json.dumps(row, allow_nan=False)
        assert isinstance(row[0], str) and len(row[0]) == 36 and isinstance(row[1], str) and len(row[1]) == 36
        assert row[2].endswith("Z")
        assert row[3:] == [1.5, "2024-01-02", [1, 2], None, "ab"]
        assert res.types[:5] == ["UUID", "UUID", "TIMESTAMP WITH TIME ZONE", "DECIMAL(4,2)", "DATE"]
        return
    res = q(db, "SELECT uuid, person_id, timestamp, 1.5::DECIMAL(4,2) AS d, INTERVAL 90 SECOND AS i, "
                "DATE '2024-01-02' AS day, [1, 2] AS l, {'a': 1} AS st, 'nan'::DOUBLE AS nan, "
                "170141183460469231731687303715884105727::HUGEINT AS big, 'ab'::BLOB AS blob "
                "FROM events ORDER BY timestamp LIMIT 1")
    [row] = res.results
    json.dumps(row, allow_nan=False)
    assert isinstance(row[0], str) and len(row[0]) == 36 and isinstance(row[1], str)
    assert row[2].endswith("Z")
    assert row[3:] == [1.5, 90.0, "2024-01-02", [1, 2], {"a": 1}, None, "170141183460469231731687303715884105727", "YWI="]


def test_time_zone_setting(db, store_engine):
    res = q(db, "SELECT timestamp, date_trunc('day', timestamp - INTERVAL 9 HOUR) FROM events "
                "ORDER BY timestamp LIMIT 1", timezone="America/New_York")
    assert res.results[0][0].startswith("2024-05-01T05:00:") and res.results[0][0].endswith("-04:00")
    # DuckDB truncates in the session's zone; ClickHouse in the column's (UTC), shown in the zone
    assert res.results[0][1] == ("2024-04-30T00:00:00-04:00" if store_engine == "duckdb"
                                 else "2024-04-30T20:00:00-04:00")


# -- limits ---------------------------------------------------------------------------------------

def test_default_limit_and_cap(db):
    res = q(db, "SELECT * FROM events")
    assert len(res.results) == 100 and res.truncated
    assert "project_id" not in res.columns and res.columns[:3] == ["uuid", "event", "distinct_id"]
    res = q(db, "SELECT * FROM events LIMIT 5")
    assert len(res.results) == 5 and not res.truncated
    res = q(db, "SELECT event FROM events LIMIT 100000", max_rows=120)
    assert len(res.results) == 120 and res.truncated
    res = q(db, "SELECT event FROM events", default_limit=10_000, max_rows=50)
    assert len(res.results) == 50 and res.truncated
    res = q(db, "SELECT event FROM events", default_limit=1000)
    assert len(res.results) == len(db.raw) and not res.truncated
    res = q(db, "SELECT event FROM events LIMIT (SELECT 500)", max_rows=30)
    assert len(res.results) == 30 and res.truncated
    res = q(db, "SELECT 1 UNION ALL SELECT 2", default_limit=1)
    assert res.results == [[1]] and res.truncated
    assert q(db, "SELECT event FROM events LIMIT 0").results == []


def test_timeout_stops_a_long_query_fast(db, store_engine):
    before = total_rows(db)
    started = time.monotonic()
    slow = ("SELECT count(*) FROM events a, events b, range(1000000) c, range(1000000) d" if store_engine == "duckdb"
            else "SELECT count(*) FROM events a, events b, events c, events d, events f")
    with pytest.raises(SQLRejected) as err:
        q(db, slow, timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert err.value.code == "query_timeout" and err.value.status == 408
    assert "0.5 s" in err.value.detail
    assert elapsed < 5
    assert total_rows(db) == before
    assert q(db, "SELECT count(*) FROM events").results == [[len(db.raw)]]  # the store still works


# -- project isolation ------------------------------------------------------------------------------

def test_projects_are_isolated(db):
    with pytest.raises(SQLRejected) as err:
        q(db, "SELECT * FROM events WHERE project_id = 2")
    assert err.value.code == "sql_error" and "project_id" in err.value.detail
    res = q(db, "SELECT count(*) FROM events WHERE event = 'secret_event' OR properties.$browser = 'Opera'")
    assert res.results == [[0]]
    assert q(db, "SELECT count(*) FROM events", project_id=db.other_id).results == [[7]]
    assert q(db, "SELECT count(*) FROM persons", project_id=db.other_id).results == [[7]]
    assert q(db, "SELECT count(*) FROM persons WHERE properties.email LIKE 'o%'").results == [[0]]
    assert q(db, "SELECT count(*) FROM person_distinct_ids WHERE distinct_id LIKE 'other-%'").results == [[0]]
    assert q(db, "SELECT count(*) FROM sessions WHERE distinct_id LIKE 'other-%'").results == [[0]]
    res = q(db, "SELECT distinct_id FROM sessions WHERE session_id = 's0'", project_id=db.other_id)
    assert res.results == [["other-0"]]
    for sql in ["SELECT * FROM events_hot", "SELECT * FROM main.events", "SELECT * FROM person_overrides",
                "SELECT * FROM persons p, main.persons q"]:
        with pytest.raises(SQLRejected) as err:
            q(db, sql)
        assert err.value.code == "sql_table_not_allowed"


# -- refusals ---------------------------------------------------------------------------------------

REFUSED = [
    # statements other than queries
    ("INSERT INTO events SELECT * FROM events", "sql_statement_not_allowed"),
    ("UPDATE persons SET properties = '{}'", "sql_statement_not_allowed"),
    ("DELETE FROM events", "sql_statement_not_allowed"),
    ("CREATE TABLE x AS SELECT 1", "sql_statement_not_allowed"),
    ("CREATE MACRO m(a) AS a", "sql_statement_not_allowed"),
    ("DROP TABLE events", "sql_statement_not_allowed"),
    ("ALTER TABLE events_hot ADD COLUMN x INT", "sql_statement_not_allowed"),
    ("ATTACH '/tmp/x.db' AS x", "sql_statement_not_allowed"),
    ("DETACH x", "sql_statement_not_allowed"),
    ("COPY events TO '/tmp/out.csv'", "sql_statement_not_allowed"),
    ("COPY (SELECT 1) TO '/tmp/out.csv'", "sql_statement_not_allowed"),
    ("EXPORT DATABASE '/tmp/x'", "sql_statement_not_allowed"),
    ("IMPORT DATABASE '/tmp/x'", "sql_statement_not_allowed"),
    ("PRAGMA table_info('events')", "sql_statement_not_allowed"),
    ("SET memory_limit = '1GB'", "sql_statement_not_allowed"),
    ("RESET memory_limit", "sql_statement_not_allowed"),
    ("CALL checkpoint()", "sql_statement_not_allowed"),
    ("INSTALL httpfs", "sql_statement_not_allowed"),
    ("LOAD httpfs", "sql_statement_not_allowed"),
    ("USE memory", "sql_statement_not_allowed"),
    ("CHECKPOINT", "sql_statement_not_allowed"),
    ("FORCE CHECKPOINT", "sql_statement_not_allowed"),
    ("VACUUM", "sql_statement_not_allowed"),
    ("BEGIN TRANSACTION", "sql_statement_not_allowed"),
    ("DESCRIBE events", "sql_statement_not_allowed"),
    ("SUMMARIZE events", "sql_statement_not_allowed"),
    ("SHOW TABLES", "sql_statement_not_allowed"),
    ("EXPLAIN SELECT 1", "sql_statement_not_allowed"),
    ("PIVOT events ON event USING count(*)", "sql_statement_not_allowed"),
    ("SELECT * FROM (DESCRIBE events)", "sql_statement_not_allowed"),
    ("SELECT * FROM (PIVOT events ON event USING count(*))", "sql_statement_not_allowed"),
    ("SELECT 1 INTO t", "sql_statement_not_allowed"),
    # several statements, comment tricks
    ("SELECT 1; DROP TABLE events", "sql_multiple_statements"),
    ("SELECT 1; SELECT 2", "sql_multiple_statements"),
    ("SELECT '--'; DROP TABLE events", "sql_multiple_statements"),
    ("SELECT 1 /* a */; /* b */ DELETE FROM events", "sql_multiple_statements"),
    ("/* SELECT */ DROP TABLE events", "sql_statement_not_allowed"),
    ("-- SELECT 1\nDROP TABLE events", "sql_statement_not_allowed"),
    # files and table functions
    ("SELECT * FROM read_csv('/etc/passwd')", "sql_table_function_not_allowed"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", "sql_table_function_not_allowed"),
    ("SELECT * FROM read_parquet('parts/*.parquet')", "sql_table_function_not_allowed"),
    ("SELECT * FROM read_json('/etc/hosts')", "sql_table_function_not_allowed"),
    ("SELECT * FROM read_text('/etc/passwd')", "sql_table_function_not_allowed"),
    ("SELECT * FROM read_blob('/etc/passwd')", "sql_table_function_not_allowed"),
    ("SELECT * FROM parquet_scan('x.parquet')", "sql_table_function_not_allowed"),
    ("SELECT * FROM sqlite_scan('x.db', 't')", "sql_table_function_not_allowed"),
    ("SELECT * FROM glob('/*')", "sql_table_function_not_allowed"),
    ("SELECT * FROM query('SELECT * FROM events_hot')", "sql_table_function_not_allowed"),
    ("SELECT * FROM query_table('events_hot')", "sql_table_function_not_allowed"),
    ("SELECT * FROM duckdb_tables()", "sql_table_function_not_allowed"),
    ("SELECT * FROM duckdb_settings()", "sql_table_function_not_allowed"),
    ("SELECT * FROM pragma_table_info('events')", "sql_table_function_not_allowed"),
    ("SELECT * FROM events, LATERAL read_csv(distinct_id)", "sql_table_function_not_allowed"),
    ("SELECT * FROM '/etc/passwd'", "sql_table_not_allowed"),
    ("SELECT * FROM 'data.csv'", "sql_table_not_allowed"),
    ("SELECT * FROM \"/etc/passwd\"", "sql_table_not_allowed"),
    # tables outside the project views
    ("SELECT * FROM main.events_hot", "sql_table_not_allowed"),
    ("SELECT * FROM events_hot", "sql_table_not_allowed"),
    ("SELECT * FROM memory.x", "sql_table_not_allowed"),
    ("SELECT * FROM information_schema.tables", "sql_table_not_allowed"),
    ("SELECT * FROM duckdb_tables", "sql_table_not_allowed"),
    ("SELECT * FROM sqlite_master", "sql_table_not_allowed"),
    ("SELECT * FROM person_overrides", "sql_table_not_allowed"),
    ("SELECT * FROM ingestion_warnings", "sql_table_not_allowed"),
    ("SELECT (SELECT count(*) FROM person_merges)", "sql_table_not_allowed"),
    ("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) t, x", "sql_table_not_allowed"),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", "sql_table_not_allowed"),
    ("WITH a AS (SELECT * FROM a) SELECT * FROM a", "sql_table_not_allowed"),
    # CTE names
    ("WITH events AS (SELECT * FROM main.events) SELECT * FROM events", "sql_reserved_name"),
    ("WITH Events AS (SELECT 1) SELECT * FROM events", "sql_reserved_name"),
    ("WITH x AS (SELECT 1), sessions AS (SELECT 2) SELECT * FROM x", "sql_reserved_name"),
    ("SELECT * FROM (WITH persons AS (SELECT 1) SELECT * FROM persons)", "sql_reserved_name"),
    ("WITH person_overrides AS (SELECT 1) SELECT * FROM person_overrides", "sql_reserved_name"),
    ("WITH events_hot AS (SELECT 1) SELECT 1", "sql_reserved_name"),
    # functions
    ("SELECT getenv('HOME')", "sql_function_not_allowed"),
    ("SELECT current_setting('memory_limit')", "sql_function_not_allowed"),
    ("SELECT read_text('/etc/passwd')", "sql_function_not_allowed"),
    ("SELECT nextval('person_merge_ids')", "sql_function_not_allowed"),
    ("SELECT setval('person_merge_ids', 1)", "sql_function_not_allowed"),
    ("SELECT getvariable('x')", "sql_function_not_allowed"),
    ("SELECT sleep_ms(100000)", "sql_function_not_allowed"),
    ("SELECT write_log('x')", "sql_function_not_allowed"),
    ("SELECT json_serialize_plan('SELECT * FROM events_hot')", "sql_function_not_allowed"),
    ("SELECT current_database(), version()", "sql_function_not_allowed"),
    ("SELECT main.getenv('HOME')", "sql_function_not_allowed"),
    ("SELECT count(*) FILTER (WHERE current_setting('x') = '') FROM events", "sql_function_not_allowed"),
    # parameters, empty, garbage
    ("SELECT * FROM events WHERE event = ?", "sql_parameter_not_allowed"),
    ("SELECT * FROM events WHERE event = $1", "sql_parameter_not_allowed"),
    ("", "sql_empty"),
    ("  ;  ; -- nothing\n", "sql_empty"),
    ("SELEC 1", "sql_statement_not_allowed"),
    ("SELECT FROM WHERE", "sql_syntax"),
    ("SELECT 'unterminated", "sql_syntax"),
]


@pytest.mark.parametrize("sql, code", REFUSED, ids=[f"{i:02d}-{c}" for i, (_, c) in enumerate(REFUSED)])
def test_refused(db, store_engine, sql, code):
    if store_engine == "chdb":  # the ClickHouse store's internal tables have other names
        sql = sql.replace("events_hot", "persons_data")
    before = total_rows(db)
    with pytest.raises(SQLRejected) as err:
        q(db, sql)
    assert err.value.code == code, err.value.detail
    assert isinstance(err.value, InvalidInput) and err.value.status == 400
    assert err.value.to_json()["attr"] == "query"
    assert total_rows(db) == before


def test_refusal_messages_are_precise(db):
    cases = {
        "SELECT * FROM read_csv('/etc/passwd')": "read_csv",
        "SELECT getenv('HOME')": "getenv",
        "SELECT * FROM main.events_hot": "main.events_hot",
        "DROP TABLE events": "DROP TABLE",
        "WITH events AS (SELECT 1) SELECT 1": "`events` is a built-in table",
        "SELECT 1; DROP TABLE events": "2 (SELECT, DROP TABLE)",
        "SELECT * FROM nowhere": "Tables you can query: events, persons",
    }
    for sql, needle in cases.items():
        with pytest.raises(SQLRejected) as err:
            q(db, sql)
        assert needle in err.value.detail, (sql, err.value.detail)


def test_harmless_lookalikes_run(db):
    assert q(db, "SELECT 1 -- ; DROP TABLE events").results == [[1]]
    assert q(db, "SELECT 1 /* ; DROP TABLE events */").results == [[1]]
    assert q(db, "SELECT 'x; DROP TABLE events' AS s").results == [["x; DROP TABLE events"]]
    assert q(db, "SELECT $$ ; DROP TABLE events $$ AS s").results == [[" ; DROP TABLE events "]]
    assert q(db, "SELECT 1;").results == [[1]]
    assert q(db, "SELECT count(*) AS \"read_csv('/etc/passwd')\" FROM events").results == [[len(db.raw)]]
    res = q(db, "WITH x AS (SELECT 1 AS a) SELECT * FROM (WITH y AS (SELECT a FROM x) SELECT * FROM y)")
    assert res.results == [[1]]


def test_duckdb_parser_is_a_second_gate(db, store_engine):
    """Even SQL that got past sqlglot's checks is refused by the check on DuckDB's own parse."""
    if store_engine != "duckdb":
        pytest.skip("DuckDB's parser; see test_clickhouse_parser_is_a_second_gate")
    for sql, code in [("SELECT getenv('HOME')", "sql_function_not_allowed"),
                      ("SELECT * FROM main.events_hot", "sql_table_not_allowed"),
                      ("SELECT * FROM person_overrides", "sql_table_not_allowed"),
                      ("SELECT * FROM read_csv('/etc/passwd')", "sql_table_function_not_allowed"),
                      ("SELECT * FROM (SHOW TABLES)", "sql_table_not_allowed"),
                      ("SELECT $other", "sql_parameter_not_allowed"),
                      ("SELECT 1; SELECT 2", "sql_multiple_statements"),
                      ("DELETE FROM events", "sql_statement_not_allowed")]:
        with pytest.raises(SQLRejected) as err:
            _duckdb_check(db.storage, PreparedSQL(sql, set(), set(), 10))
        assert err.value.code == code, (sql, err.value.detail)
    _duckdb_check(db.storage, prepare_sql("SELECT count(*), properties.$browser FROM events GROUP BY 2"))


def test_allowlists_name_real_functions_and_nothing_dangerous():
    import duckdb

    names = {r[0].lower() for r in duckdb.connect().execute(
        "SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()}
    assert (FUNCTIONS | OPERATORS | TABLE_FUNCTIONS) <= names
    dangerous = {"getenv", "current_setting", "read_text", "read_blob", "read_csv", "read_parquet", "query",
                 "query_table", "nextval", "currval", "setval", "getvariable", "sleep_ms", "pg_sleep",
                 "write_log", "json_serialize_plan", "json_serialize_sql", "json_execute_serialized_sql",
                 "glob", "checkpoint", "force_checkpoint", "current_database", "current_query", "version",
                 "stats", "txid_current", "parquet_scan", "sqlite_scan", "finalize", "to_aggregate_state"}
    assert not dangerous & (FUNCTIONS | TABLE_FUNCTIONS)
    assert not {n for n in FUNCTIONS | TABLE_FUNCTIONS if n.startswith(("duckdb_", "pragma_", "read_", "__"))
                or n.endswith("_scan")}


# -- fuzz ---------------------------------------------------------------------------------------------

WORDS = ["SELECT", "FROM", "WHERE", "events", "persons", "sessions", "events_hot", "main", ".", ",", "(", ")",
         ";", "*", "count(*)", "properties.$browser", "DROP", "TABLE", "COPY", "TO", "'/etc/passwd'",
         "read_csv", "getenv", "WITH", "AS", "UNION", "ALL", "LIMIT", "1", "$1", "?", "--", "/*", "*/",
         "ATTACH", "PRAGMA", "SET", "'x'", "\"events\"", "JOIN", "ON", "=", "event", "person_id", "LATERAL",
         "range(3)", "CREATE", "INSERT", "INTO", "VALUES", "x", "GROUP", "BY", "ORDER", "->>", "'$browser'"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200),
                 st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join)))
def test_fuzz_only_refusals_escape_and_nothing_changes(db, store_engine, text):
    before = total_rows(db)
    try:
        res = q(db, text, timeout_s=2)
    except SQLRejected:
        pass
    else:
        assert isinstance(res, SQLResult)
        json.dumps(res.results, allow_nan=False)
    assert total_rows(db) == before


def test_storage_query_is_read_only_and_reports_types(db, store_engine):
    from sightline.storage.base import QueryError

    if store_engine != "duckdb":
        pytest.skip("DuckDB's tables; see test_clickhouse_storage_query_is_read_only")
    before = total_rows(db)
    for sql in ["CREATE TABLE sneaky (a INT)", "DELETE FROM events_hot", "INSERT INTO persons SELECT * FROM persons"]:
        with pytest.raises(QueryError):
            db.storage.query(sql, timeout_s=5)
    assert total_rows(db) == before
    assert db.storage.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'sneaky'").rows == [(0,)]
    res = db.storage.query("SELECT 1 AS a, 'x' AS b FROM range(10)", max_rows=3, timezone="UTC")
    assert res.columns == ["a", "b"] and res.types == ["INTEGER", "VARCHAR"] and len(res.rows) == 3
    with pytest.raises(QueryError):
        db.storage.query("SELECT 1", timezone="Not/AZone")


# -- ClickHouse: the second gate and the engine's own read-only mode ---------------------------------

def test_clickhouse_parser_is_a_second_gate(db, store_engine):
    """ClickHouse's own parse (EXPLAIN AST) of the translated text refuses what the first gate
    would have refused, should a translation ever produce it."""
    if store_engine != "chdb":
        pytest.skip("ClickHouse only")
    from sightline.query.sql import _clickhouse_check

    for sql, code in [("SELECT * FROM system.tables", "sql_table_not_allowed"),
                      ("SELECT * FROM persons_data", "sql_table_not_allowed"),
                      ("SELECT * FROM file('/etc/passwd')", "sql_table_function_not_allowed"),
                      ("SELECT * FROM events, numbers(10) n", "sql_table_function_not_allowed"),
                      ("SELECT file('/etc/passwd')", "sql_function_not_allowed"),
                      ("SELECT getSetting('readonly')", "sql_function_not_allowed"),
                      ("SELECT dictGet('d', 'x', 1)", "sql_function_not_allowed"),
                      ("SELECT currentDatabase()", "sql_function_not_allowed"),
                      ("SELECT 1 SETTINGS readonly = 0", "sql_statement_not_allowed"),
                      ("DROP TABLE events", "sql_statement_not_allowed"),
                      ("INSERT INTO events SELECT * FROM events", "sql_statement_not_allowed")]:
        prepared = PreparedSQL(sql, set(), set(), 10)
        with pytest.raises(SQLRejected) as err:
            _clickhouse_check(db.storage, prepared)
        assert err.value.code == code, (sql, err.value.detail)
    ok = prepare_sql("SELECT count(*), properties.$browser FROM events GROUP BY 2", engine="clickhouse")
    _clickhouse_check(db.storage, ok)
    assert "__sl_events" in ok.sql and "project_id = $project" in ok.sql


def test_clickhouse_storage_query_is_read_only(db, store_engine):
    if store_engine != "chdb":
        pytest.skip("ClickHouse only")
    from sightline.storage.base import QueryError

    before = total_rows(db)
    for sql in ["CREATE TABLE sneaky (a Int32) ENGINE = Memory", "INSERT INTO events_x SELECT 1",
                "ALTER TABLE events DELETE WHERE 1", "SELECT 1 SETTINGS max_execution_time = 1000"]:
        with pytest.raises(QueryError):
            db.storage.query(sql, timeout_s=5, readonly=1)
    assert total_rows(db) == before
    assert db.storage.execute("SELECT count() FROM system.tables WHERE database = currentDatabase() "
                              "AND name = 'sneaky'").rows == [(0,)]
    res = db.storage.query("SELECT 1 AS a, 'x' AS b FROM numbers(10)", max_rows=3, timezone="UTC", readonly=1)
    assert res.columns == ["a", "b"] and res.types == ["UTINYINT", "VARCHAR"] and len(res.rows) == 3
    with pytest.raises(QueryError):
        db.storage.query("SELECT 1", timezone="Not/AZone")


def test_same_answers_on_both_engines(tmp_path_factory, store_engine):
    """The common cases (counts, unique persons, property access, date functions) answer the
    same on DuckDB and ClickHouse over the same events."""
    if store_engine != "chdb":
        pytest.skip("runs once, with the chdb parametrization")
    import os

    raw = [{"event": ["$pageview", "signed_up"][i % 2], "distinct_id": f"u{i % 7}",
            "timestamp": iso(T0 + timedelta(hours=i * 5)),
            "properties": {"$browser": BROWSERS[i % 3], "price": i % 11, "plan": ["free", "pro", None][i % 3]}}
           for i in range(120)]
    queries = [
        "SELECT event, count(*) AS n, count(DISTINCT person_id) AS persons FROM events GROUP BY 1 ORDER BY 1",
        "SELECT properties.$browser AS b, sum(properties.price::INT) AS s FROM events GROUP BY 1 ORDER BY 1",
        "SELECT properties->>'plan' AS p, count(*) FROM events GROUP BY 1 ORDER BY 1 NULLS FIRST",
        "SELECT date_trunc('day', timestamp) AS d, count(*) FROM events GROUP BY 1 ORDER BY 1 LIMIT 5",
        "SELECT date_trunc('week', timestamp) AS w, count(DISTINCT distinct_id) FROM events GROUP BY 1 ORDER BY 1",
        "SELECT count(*) FROM events WHERE timestamp >= TIMESTAMP '2024-05-03' AND properties.plan = 'pro'",
        "SELECT distinct_id, max(timestamp), min(properties.price::INT) FROM events GROUP BY ALL ORDER BY 1",
        "SELECT count(*) FROM persons",
        "SELECT avg(properties.price::DOUBLE) FILTER (WHERE event = 'signed_up') FROM events",
    ]
    answers = {}
    for engine in ("duckdb", "chdb"):
        store = "chdb" if engine == "chdb" else "duckdb"
        with sightline.open(tmp_path_factory.mktemp("same") / "d", store=store) as s:
            s.ingest(raw)
            s.sync()
            answers[engine] = [q(s, sql).results for sql in queries]
    assert os.environ.get("SIGHTLINE_STORE") == "chdb"
    for sql, a, b in zip(queries, answers["duckdb"], answers["chdb"]):
        assert a == b, sql
    assert answers["duckdb"][0] == [["$pageview", 60, 7], ["signed_up", 60, 7]]
