"""The event schema every storage backend implements, and the columnar batch the writer builds.

Events are stored with typed columns for what every query touches (event, timestamp,
distinct_id, person_id, session), the full ``properties`` JSON, and *materialized* hot
properties: copies of the properties most insights filter and break down by, so those
queries read one narrow column instead of parsing JSON.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Sequence

import pyarrow as pa

from sightline.ingest.normalize import Event

# 2: event parts partitioned by project and month (event_parts.project_id, month, bytes)
SCHEMA_VERSION = 2

# property name → column name. Order is the column order in the events table.
HOT_PROPERTIES: dict[str, str] = {
    "$current_url": "mat_current_url",
    "$pathname": "mat_pathname",
    "$host": "mat_host",
    "$browser": "mat_browser",
    "$os": "mat_os",
    "$device_type": "mat_device_type",
    "$referrer": "mat_referrer",
    "$referring_domain": "mat_referring_domain",
    "$lib": "mat_lib",
    "$geoip_country_code": "mat_country_code",
    "utm_source": "mat_utm_source",
    "utm_medium": "mat_utm_medium",
    "utm_campaign": "mat_utm_campaign",
    "utm_content": "mat_utm_content",
    "utm_term": "mat_utm_term",
}

GROUP_COLUMNS = tuple(f"group_{i}" for i in range(5))

# Columns the backend derives from the properties JSON when it stores a batch
# (property name → column), so every write path materializes them the same way.
DERIVED_COLUMNS: dict[str, str] = {
    "$session_id": "session_id",
    "$window_id": "window_id",
    "$elements_chain": "elements_chain",
    **HOT_PROPERTIES,
}

# The columnar batch handed to Storage.append: what the writer knows that the JSON does not.
EVENT_BATCH_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("project_id", pa.int32()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("person_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("properties", pa.string()),
    ]
    + [(col, pa.string()) for col in GROUP_COLUMNS]
)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def epoch_micros(value: datetime) -> int:
    """Exact epoch microseconds of an aware datetime (integer arithmetic, no float rounding)."""
    return (value - _EPOCH) // _MICROSECOND


def events_to_arrow(events: Sequence[Event], project_ids: Sequence[int], created_at: datetime) -> pa.Table:
    """Build the columnar batch for ``events`` (``project_ids[i]`` is event i's project)."""
    ts_type = pa.timestamp("us", tz="UTC")
    n = len(events)
    # (a tz-aware pa.scalar would import pandas on first use: half a second of a live server)
    created = pa.repeat(pa.scalar(epoch_micros(created_at), pa.int64()), n).view(ts_type)
    # tz-aware datetimes convert slowly one by one; epoch microseconds as integers do not
    micros = [int(e.timestamp.timestamp() * 1_000_000) for e in events]
    columns: dict[str, pa.Array] = {
        "uuid": pa.array([e.uuid for e in events], pa.string()),
        "project_id": pa.array(project_ids, pa.int32()),
        "event": pa.array([e.event for e in events], pa.string()),
        "distinct_id": pa.array([e.distinct_id for e in events], pa.string()),
        "person_id": pa.array([e.person_id for e in events], pa.string()),
        "timestamp": pa.array(micros, pa.int64()).view(ts_type),  # same bytes, no cast kernel
        "created_at": created,
        "properties": pa.array([e.properties_json for e in events], pa.string()),
    }
    any_groups = any(e.groups for e in events)
    for i, col in enumerate(GROUP_COLUMNS):
        columns[col] = (pa.array([e.groups.get(i) for e in events], pa.string()) if any_groups
                        else pa.nulls(n, pa.string()))
    return pa.table(columns, schema=EVENT_BATCH_SCHEMA)
