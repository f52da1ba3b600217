"""Listing raw records: events and persons, PostHog-shaped, with keyset pagination.

Persons are resolved through the merge overrides, so an event ingested before an
``$identify`` shows the person it belongs to now.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from sightline.errors import InvalidInput
from sightline.ingest.normalize import parse_timestamp
from sightline.query.dialect import dialect_for
from sightline.storage.base import Storage

UTC = timezone.utc
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

RESOLVED_PERSON = "coalesce(o.override_person_id, e.person_id)"
EVENTS_FROM = ("events e LEFT JOIN person_overrides o "
               "ON o.project_id = e.project_id AND o.old_person_id = e.person_id")


@dataclass
class Page:
    results: list[dict[str, Any]]
    cursor: str | None  # pass back as ``cursor`` for the next page; None on the last page


def _limit(value: Any) -> int:
    if value in (None, ""):
        return DEFAULT_LIMIT
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"`limit` must be an integer, not {str(value)[:20]!r}.", attr="limit") from None
    if n < 1:
        raise InvalidInput("`limit` must be at least 1.", attr="limit")
    return min(n, MAX_LIMIT)


def _ts_param(name: str, value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    parsed = parse_timestamp(str(value))
    if parsed is None:
        raise InvalidInput(f"`{name}` must be an ISO-8601 timestamp.", attr=name)
    return parsed


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(value: str) -> list:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        parts = orjson.loads(raw)
        if not isinstance(parts, list):
            raise ValueError
        return parts
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidInput("`cursor` is not valid; use the `next` URL as given.", attr="cursor") from None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def person_id_for(storage: Storage, project_id: int, distinct_id: str) -> str | None:
    d = dialect_for(storage)
    rows = storage.execute(
        f"SELECT {d.to_text('person_id')} FROM person_distinct_ids WHERE project_id = $p AND distinct_id = $d",
        {"p": project_id, "d": distinct_id}).rows
    return rows[0][0] if rows else None


def list_events(storage: Storage, project_id: int, *, event: str | None = None,
                distinct_id: str | None = None, person_id: str | None = None,
                after: Any = None, before: Any = None, limit: Any = None,
                cursor: str | None = None) -> Page:
    """Newest first. ``distinct_id`` selects every event of that distinct_id's (merged) person."""
    n = _limit(limit)
    d = dialect_for(storage)
    where = ["e.project_id = $project"]
    params: dict[str, Any] = {"project": project_id}
    if event:
        where.append("e.event = $event")
        params["event"] = event
    if distinct_id:
        pid = person_id_for(storage, project_id, distinct_id)
        if pid is None:
            where.append("e.distinct_id = $distinct_id")
            params["distinct_id"] = distinct_id
        else:
            where.append(f"{RESOLVED_PERSON} = {d.try_uuid('$person')}")
            params["person"] = pid
    if person_id:
        where.append(f"{RESOLVED_PERSON} = {d.try_uuid('$person_filter')}")
        params["person_filter"] = person_id
    if (ts := _ts_param("after", after)) is not None:
        where.append("e.timestamp > $after")
        params["after"] = ts
    if (ts := _ts_param("before", before)) is not None:
        where.append("e.timestamp < $before")
        params["before"] = ts
    if cursor:
        parts = decode_cursor(cursor)
        if len(parts) != 2:
            raise InvalidInput("`cursor` is not valid; use the `next` URL as given.", attr="cursor")
        where.append(f"(e.timestamp < $cursor_ts OR (e.timestamp = $cursor_ts AND e.uuid < {d.try_uuid('$cursor_uuid')}))")
        params["cursor_ts"] = _ts_param("cursor", parts[0])
        params["cursor_uuid"] = str(parts[1])
    params["limit"] = n + 1
    # Two steps: find the page on narrow columns, then read the wide ones only for its rows
    # (bounded by the page's time range, which lets the store skip everything else).
    top = storage.execute(f"SELECT e.timestamp, {d.to_text('e.uuid')} FROM {EVENTS_FROM} "
                          f"WHERE {' AND '.join(where)} ORDER BY e.timestamp DESC, e.uuid DESC LIMIT $limit",
                          params).rows
    if not top:
        return Page([], None)
    sql = (f"SELECT {d.to_text('e.uuid')}, e.event, e.distinct_id, e.properties, e.timestamp, "
           f"{d.to_text(RESOLVED_PERSON)}, e.elements_chain, e.created_at "
           f"FROM {EVENTS_FROM} WHERE e.project_id = $project AND e.timestamp >= $lo AND e.timestamp <= $hi "
           f"AND {d.has('$uuids', d.to_text('e.uuid'))} ORDER BY e.timestamp DESC, e.uuid DESC")
    rows = storage.execute(sql, {"project": project_id, "lo": top[-1][0], "hi": top[0][0],
                                 "uuids": [u for _, u in top]}).rows
    results = [{
        "id": r[0], "uuid": r[0], "event": r[1], "distinct_id": r[2],
        "properties": orjson.loads(r[3]) if r[3] else {},
        "timestamp": _iso(r[4]), "person_id": r[5], "elements": [],
        "elements_chain": r[6] or "", "created_at": _iso(r[7]),
    } for r in rows[:n]]
    next_cursor = None
    if len(rows) > n:
        last = results[-1]
        next_cursor = encode_cursor(last["timestamp"], last["uuid"])
    return Page(results, next_cursor)


def list_persons(storage: Storage, project_id: int, *, distinct_id: str | None = None,
                 search: str | None = None, person_id: str | None = None, limit: Any = None,
                 cursor: str | None = None) -> Page:
    """Persons with all their distinct_ids, newest first."""
    n = _limit(limit)
    d = dialect_for(storage)
    where = ["p.project_id = $project"]
    params: dict[str, Any] = {"project": project_id}
    if distinct_id:
        where.append("p.id IN (SELECT person_id FROM person_distinct_ids "
                     "WHERE project_id = $project AND distinct_id = $distinct_id)")
        params["distinct_id"] = distinct_id
    if person_id:
        # a merged-away id resolves to the person it was merged into
        where.append(f"p.id = coalesce((SELECT any(override_person_id) FROM person_overrides WHERE project_id = $project "
                     f"AND old_person_id = {d.try_uuid('$person_id')}), {d.try_uuid('$person_id')})"
                     if d.name == "clickhouse" else
                     "p.id = coalesce((SELECT override_person_id FROM person_overrides WHERE project_id = $project "
                     "AND old_person_id = TRY_CAST($person_id AS UUID)), TRY_CAST($person_id AS UUID))")
        params["person_id"] = person_id
    if search:
        where.append(f"({d.ilike_contains(d.to_text('p.properties'), '$search')} OR p.id IN "
                     "(SELECT person_id FROM person_distinct_ids WHERE project_id = $project "
                     f"AND {d.ilike_contains('distinct_id', '$search')}))")
        params["search"] = search
    if cursor:
        parts = decode_cursor(cursor)
        if len(parts) != 2:
            raise InvalidInput("`cursor` is not valid; use the `next` URL as given.", attr="cursor")
        where.append(f"(p.created_at < $cursor_ts OR (p.created_at = $cursor_ts AND p.id < {d.try_uuid('$cursor_id')}))")
        params["cursor_ts"] = _ts_param("cursor", parts[0])
        params["cursor_id"] = str(parts[1])
    params["limit"] = n + 1
    ids_sql, ids_join = d.distinct_ids_of("p.id", "p.project_id",
                                          among="SELECT id FROM persons WHERE project_id = $project")
    sql = (f"SELECT {d.to_text('p.id')}, p.properties, p.created_at, p.is_identified, {ids_sql} "
           f"FROM persons p{ids_join} WHERE {' AND '.join(where)} "
           "ORDER BY p.created_at DESC, p.id DESC LIMIT $limit")
    rows = storage.execute(sql, params).rows
    results = []
    for r in rows[:n]:
        props = orjson.loads(r[1]) if r[1] else {}
        ids = list(r[4] or [])
        results.append({
            "id": r[0], "uuid": r[0], "name": props.get("email") or props.get("name") or (ids[0] if ids else r[0]),
            "distinct_ids": ids, "properties": props, "created_at": _iso(r[2]),
            "is_identified": bool(r[3]),
        })
    next_cursor = None
    if len(rows) > n:
        last = results[-1]
        next_cursor = encode_cursor(last["created_at"], last["id"])
    return Page(results, next_cursor)
