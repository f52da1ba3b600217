"""The event schema every storage backend implements, and the columnar batch the writer builds.

Events are stored with typed columns for what every query touches (event, timestamp,
distinct_id, person_id, session), the full ``properties`` JSON, and *materialized* hot
properties: copies of the properties most insights filter and break down by, so those
queries read one narrow column instead of parsing JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import pyarrow as pa

from sightline.ingest.normalize import Event

SCHEMA_VERSION = 1

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


def events_to_arrow(events: Sequence[Event], project_ids: Sequence[int], created_at: datetime) -> pa.Table:
    """Build the columnar batch for ``events`` (``project_ids[i]`` is event i's project)."""
    columns: dict[str, list] = {
        "uuid": [e.uuid for e in events],
        "project_id": list(project_ids),
        "event": [e.event for e in events],
        "distinct_id": [e.distinct_id for e in events],
        "person_id": [e.person_id for e in events],
        "timestamp": [e.timestamp for e in events],
        "created_at": [created_at] * len(events),
        "properties": [e.properties_json for e in events],
    }
    for i, col in enumerate(GROUP_COLUMNS):
        columns[col] = [e.groups.get(i) for e in events]
    return pa.table(columns, schema=EVENT_BATCH_SCHEMA)
