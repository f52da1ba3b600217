"""Build a data directory with the *first* schema (version 1), as Sightline 0.1 wrote it.

The DDL below is frozen on purpose (copied from the stores as they were before version 2):
it must not follow later changes of ``meta.SCHEMA`` or the DuckDB backend. The data: one
project and key, a flag, a static cohort, events in the hot table and in one flat Parquet part,
persons with their distinct ids, ``sightline_schema`` = 1 and ``meta.sqlite`` without a version.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

META_V1 = [
    """CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL, api_token TEXT NOT NULL UNIQUE,
        timezone TEXT NOT NULL DEFAULT 'UTC', settings TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL)""",
    """CREATE TABLE api_keys (id INTEGER PRIMARY KEY, label TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
        mask TEXT NOT NULL, created_at TEXT NOT NULL, last_used_at TEXT)""",
    """CREATE TABLE feature_flags (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, key TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 1, data TEXT NOT NULL,
        created_at TEXT NOT NULL, created_by TEXT, updated_at TEXT NOT NULL, updated_by TEXT)""",
    "CREATE UNIQUE INDEX feature_flags_live_key ON feature_flags (project_id, key) WHERE deleted = 0",
    """CREATE TABLE feature_flag_activity (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL,
        flag_id INTEGER NOT NULL, version INTEGER NOT NULL, action TEXT NOT NULL, actor TEXT, at TEXT NOT NULL,
        before TEXT, after TEXT)""",
    "CREATE INDEX feature_flag_activity_flag ON feature_flag_activity (flag_id, id)",
    """CREATE TABLE cohorts (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, name TEXT NOT NULL,
        filters TEXT NOT NULL DEFAULT '{}', is_static INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE cohort_static_members (cohort_id INTEGER NOT NULL, distinct_id TEXT NOT NULL,
        PRIMARY KEY (cohort_id, distinct_id))""",
    """CREATE TABLE flag_hash_key_overrides (project_id INTEGER NOT NULL, distinct_id TEXT NOT NULL,
        flag_key TEXT NOT NULL, hash_key TEXT NOT NULL, PRIMARY KEY (project_id, distinct_id, flag_key))""",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
]

HOT = ["mat_current_url", "mat_pathname", "mat_host", "mat_browser", "mat_os", "mat_device_type",
       "mat_referrer", "mat_referring_domain", "mat_lib", "mat_country_code", "mat_utm_source",
       "mat_utm_medium", "mat_utm_campaign", "mat_utm_content", "mat_utm_term"]
GROUPS = [f"group_{i}" for i in range(5)]
EVENT_COLUMNS = (["uuid", "project_id", "event", "distinct_id", "person_id", "timestamp", "created_at",
                  "session_id", "window_id", "properties", "elements_chain"] + GROUPS + HOT)

EVENTS_V1 = [
    "CREATE TABLE events_hot (uuid UUID NOT NULL, project_id INTEGER NOT NULL, event VARCHAR NOT NULL, "
    "distinct_id VARCHAR NOT NULL, person_id UUID NOT NULL, timestamp TIMESTAMPTZ NOT NULL, "
    "created_at TIMESTAMPTZ NOT NULL, session_id VARCHAR, window_id VARCHAR, properties JSON, "
    "elements_chain VARCHAR, " + ", ".join(f"{c} VARCHAR" for c in GROUPS + HOT) + ")",
    """CREATE TABLE persons (id UUID PRIMARY KEY, project_id INTEGER NOT NULL, created_at TIMESTAMPTZ NOT NULL,
        properties JSON NOT NULL, properties_meta JSON NOT NULL, is_identified BOOLEAN NOT NULL,
        version BIGINT NOT NULL)""",
    """CREATE TABLE person_distinct_ids (project_id INTEGER NOT NULL, distinct_id VARCHAR NOT NULL,
        person_id UUID NOT NULL, PRIMARY KEY (project_id, distinct_id))""",
    """CREATE TABLE person_overrides (project_id INTEGER NOT NULL, old_person_id UUID NOT NULL,
        override_person_id UUID NOT NULL, PRIMARY KEY (project_id, old_person_id))""",
    "CREATE SEQUENCE person_merge_ids",
    """CREATE TABLE person_merges (id BIGINT PRIMARY KEY DEFAULT nextval('person_merge_ids'),
        project_id INTEGER NOT NULL, merged_at TIMESTAMPTZ NOT NULL, source_person_id UUID NOT NULL,
        target_person_id UUID NOT NULL, source_distinct_ids JSON NOT NULL, source_properties JSON NOT NULL,
        source_is_identified BOOLEAN NOT NULL, source_created_at TIMESTAMPTZ NOT NULL, reason VARCHAR NOT NULL)""",
    """CREATE TABLE groups (project_id INTEGER NOT NULL, group_type_index INTEGER NOT NULL,
        group_key VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL, properties JSON NOT NULL,
        properties_meta JSON NOT NULL, version BIGINT NOT NULL,
        PRIMARY KEY (project_id, group_type_index, group_key))""",
    """CREATE TABLE group_types (project_id INTEGER NOT NULL, group_type VARCHAR NOT NULL,
        group_type_index INTEGER NOT NULL, PRIMARY KEY (project_id, group_type))""",
    """CREATE TABLE ingestion_warnings (project_id INTEGER NOT NULL, type VARCHAR NOT NULL,
        details JSON NOT NULL, timestamp TIMESTAMPTZ NOT NULL)""",
    "CREATE TABLE sightline_schema (version INTEGER NOT NULL)",
    'CREATE TABLE ingest_wal (segment BIGINT NOT NULL, "offset" BIGINT NOT NULL)',
    """CREATE TABLE event_parts (name VARCHAR PRIMARY KEY, rows BIGINT NOT NULL, min_timestamp TIMESTAMPTZ,
        max_timestamp TIMESTAMPTZ, created_at TIMESTAMPTZ NOT NULL)""",
]


def make_v1_data_dir(data: Path, *, token: str, api_key: str, hot_events: int = 30,
                     part_events: int = 20) -> dict:
    """Write the v1 layout with sample data; returns what was written (for comparisons)."""
    data.mkdir(parents=True)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    iso = now.isoformat()
    meta = sqlite3.connect(data / "meta.sqlite")
    for ddl in META_V1:
        meta.execute(ddl)
    meta.execute("INSERT INTO projects (name, api_token, timezone, settings, created_at) VALUES (?, ?, ?, ?, ?)",
                 ("Old project", token, "UTC", json.dumps({"query_timeout_seconds": 33}), iso))
    meta.execute("INSERT INTO api_keys (label, key_hash, mask, created_at) VALUES (?, ?, ?, ?)",
                 ("old key", hashlib.sha256(api_key.encode()).hexdigest(), api_key[:8] + "…", iso))
    flag = {"key": "old-flag", "name": "Old flag", "active": True,
            "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}
    meta.execute("INSERT INTO feature_flags (project_id, key, data, created_at, updated_at) VALUES (1, ?, ?, ?, ?)",
                 ("old-flag", json.dumps(flag), iso, iso))
    meta.execute("INSERT INTO cohorts (project_id, name, filters, is_static, created_at, updated_at) "
                 "VALUES (1, 'Old cohort', '{}', 1, ?, ?)", (iso, iso))
    meta.execute("INSERT INTO cohort_static_members VALUES (1, 'old-0')")
    meta.commit()
    meta.close()

    users = [f"old-{i}" for i in range(5)]
    person_ids = {u: str(uuid.uuid4()) for u in users}
    events = []
    for i in range(hot_events + part_events):
        u = users[i % len(users)]
        events.append((str(uuid.uuid4()), u, person_ids[u], now - timedelta(days=1, minutes=i), {"i": i}))
    db = duckdb.connect(str(data / "events.duckdb"))
    for ddl in EVENTS_V1:
        db.execute(ddl)
    db.execute("INSERT INTO sightline_schema VALUES (1)")
    values = ", ".join(["(CAST(? AS UUID), 1, 'old_event', ?, CAST(? AS UUID), ?, ?, NULL, NULL, ?, NULL"
                        + ", NULL" * (len(GROUPS) + len(HOT)) + ")"] * len(events))
    params: list = []
    for uid, u, pid, ts, props in events:
        params += [uid, u, pid, ts, ts, json.dumps(props)]
    db.execute("CREATE TEMP TABLE staged AS SELECT * FROM events_hot LIMIT 0")
    db.execute(f"INSERT INTO staged VALUES {values}", params)
    db.execute(f"INSERT INTO events_hot SELECT * FROM staged LIMIT {hot_events}")
    # one flat Parquet part, as `sightline import` wrote them in v1
    (data / "parts").mkdir()
    part = "events-0001.parquet"
    db.execute(f"COPY (SELECT * FROM staged OFFSET {hot_events}) TO '{data / 'parts' / part}' (FORMAT parquet)")
    db.execute("INSERT INTO event_parts SELECT ?, count(*), min(timestamp), max(timestamp), now() "
               f"FROM (SELECT * FROM staged OFFSET {hot_events})", [part])
    for u in users:
        db.execute("INSERT INTO persons VALUES (CAST(? AS UUID), 1, ?, ?, '{}', true, 1)",
                   [person_ids[u], now - timedelta(days=2), json.dumps({"name": u.upper()})])
        db.execute("INSERT INTO person_distinct_ids VALUES (1, ?, CAST(? AS UUID))", [u, person_ids[u]])
    cols = ", ".join(EVENT_COLUMNS)
    db.execute(f"CREATE VIEW events AS SELECT {cols} FROM events_hot UNION ALL "
               f"SELECT {cols} FROM read_parquet(['{data / 'parts' / part}'])")
    db.execute("CHECKPOINT")
    db.close()
    return {"uuids": sorted(e[0] for e in events), "users": users,
            "person_names": {u: u.upper() for u in users}}
