"""Turn raw, SDK-shaped event objects into validated :class:`Event` records.

This is the second step of the write path (decode → **normalize** → persons →
writer). It owns the per-event rules of PostHog's capture service: required
fields, distinct_id stringification, token matching, uuid handling and the
timestamp / ``sent_at`` / ``offset`` clock-skew correction.

Everything here is a pure function of its inputs (``now`` is passed in).
"""

from __future__ import annotations

import os
import re
import time
import uuid as _uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import orjson

from sightline.errors import AuthenticationFailed, InvalidInput

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DISTINCT_ID_LENGTH = 200
MAX_EVENT_NAME_LENGTH = 1000
MAX_EVENT_BYTES = 1024 * 1024  # one event's properties, serialised
SKEW_DEADBAND = timedelta(seconds=150)
FUTURE_LIMIT = timedelta(hours=23)
MIN_SENT_AT_MS = 1_609_459_200_000  # 2021-01-01: smaller values are seconds, not ms

# Events PostHog's capture drops without a word.
SILENTLY_DROPPED = frozenset({"$performance_event"})
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(slots=True)
class Event:
    """One validated event, ready for identity resolution and storage."""

    uuid: str
    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any]
    set: dict[str, Any] | None = None
    set_once: dict[str, Any] | None = None
    unset: list[str] | None = None
    properties_json: str = "{}"  # serialised once, in normalize_batch
    person_id: str | None = None  # filled in by sightline.persons
    groups: dict[int, str] = field(default_factory=dict)  # group type index → key, filled by persons
    # True when normalize saw an everyday event whose only identity effect is its distinct_id's
    # person (sightline.persons.identity.needs_full_process is False): lets the writer skip
    # re-reading its properties. False promises nothing (the writer checks then).
    plain: bool = field(default=False, compare=False)


@dataclass(slots=True)
class Rejection:
    """Why one event of a request was not stored."""

    index: int
    code: str
    detail: str

    def to_json(self) -> dict:
        return {"index": self.index, "code": self.code, "detail": self.detail}


@dataclass(slots=True)
class NormalizedBatch:
    events: list[Event]
    rejected: list[Rejection]
    dropped: int = 0  # silently dropped by protocol rule ($performance_event)


def uuid7(now_ms: int | None = None, rand: int | None = None) -> str:
    """A UUIDv7 string (time-ordered), as the SDKs generate; ``rand`` (74+ bits) makes it repeatable."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    if rand is None:
        rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(_uuid.UUID(int=value))


def parse_timestamp(value: Any) -> datetime | None:
    """Parse an ISO-8601 / RFC 3339 timestamp leniently; a missing zone means UTC.

    Returns ``None`` for anything that is not a parseable string.
    """
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = _parse_timestamp_slow(text)
        if parsed is None:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _parse_timestamp_slow(text: str) -> datetime | None:
    # Forms fromisoformat refuses: "+HHMM" without colon handled by 3.11; what is left
    # is mostly lowercase separators and over-long fractions.
    candidate = text.replace("t", "T").replace("z", "Z")
    if candidate.endswith(" UTC"):
        candidate = candidate[:-4] + "+00:00"
    try:
        return datetime.fromisoformat(candidate)
    except ValueError:
        return None


def stringify_id(value: Any) -> str | None:
    """PostHog's rule: any JSON value becomes a string; NUL → U+FFFD; at most 200 chars."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = orjson.dumps(value).decode()
    else:
        text = orjson.dumps(value).decode()
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    text = text[:MAX_DISTINCT_ID_LENGTH]
    return text if text.strip() else None


def event_token(raw: dict) -> str | None:
    for key in ("token", "$token", "api_key"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            return value
    props = raw.get("properties")
    if isinstance(props, dict):
        value = props.get("token")
        if isinstance(value, str) and value:
            return value
    return None


def request_token(batch_token: str | None, raw_events: Iterable[Any]) -> str:
    """The request's project token. Every token in a request must agree (else 401).

    A batch-level token wins over the events' own (they are not even read)."""
    if batch_token:
        return batch_token
    tokens = set()
    for raw in raw_events:
        if isinstance(raw, dict):
            tok = event_token(raw)
            if tok:
                tokens.add(tok)
    if not tokens:
        raise AuthenticationFailed(
            "No project token: send it as `api_key` or `token` in the body, in each event's "
            "`properties.token`, or as the `token` query parameter.", code="missing_token")
    if len(tokens) > 1:
        raise AuthenticationFailed("Events in one request carry different project tokens.",
                                   code="mixed_tokens")
    return tokens.pop()


def correct_timestamp(*, timestamp: datetime | None, offset_ms: Any, sent_at: datetime | None,
                      now: datetime, ignore_sent_at: bool = False) -> datetime:
    """PostHog capture's timestamp rule (spec §2.5), with the 150 s skew deadband."""
    if isinstance(offset_ms, (int, float)) and not isinstance(offset_ms, bool):
        ts = now - timedelta(milliseconds=offset_ms)
    elif timestamp is not None:
        ts = timestamp
        if sent_at is not None and not ignore_sent_at:
            skew = sent_at - now
            excess = abs(skew) - SKEW_DEADBAND
            if excess > timedelta(0):
                ts = ts - excess if skew > timedelta(0) else ts + excess
    else:
        ts = now
    if ts - now > FUTURE_LIMIT:
        ts = now
    if ts.year < 1970:
        ts = EPOCH
    return ts


def _merge_dict(first: Any, second: Any) -> dict | None:
    """Merge two optional dicts; the second one wins on conflicts."""
    out: dict | None = None
    for part in (first, second):
        if isinstance(part, dict) and part:
            out = {**(out or {}), **part}
    return out


def normalize_event(raw: Any, *, now: datetime, sent_at: datetime | None) -> Event | None:
    """Validate one raw event. Returns ``None`` for protocol-level silent drops.

    Raises :class:`InvalidInput` (with a precise ``code``) when the event must be rejected.
    """
    if not isinstance(raw, dict):
        raise InvalidInput("An event must be a JSON object.", code="invalid_event")
    name = raw.get("event")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("Event has no `event` name.", code="missing_event_name")
    if len(name) > MAX_EVENT_NAME_LENGTH:
        raise InvalidInput(f"Event name is longer than {MAX_EVENT_NAME_LENGTH} characters.",
                           code="invalid_event_name")
    if "\x00" in name:
        name = name.replace("\x00", "\ufffd")
    if name in SILENTLY_DROPPED:
        return None

    props = raw.get("properties")
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        raise InvalidInput("`properties` must be a JSON object.", code="invalid_properties")
    else:
        props = dict(props)

    distinct = raw.get("distinct_id")
    if distinct is None:
        distinct = raw.get("$distinct_id")
    if distinct is None:
        distinct = props.get("distinct_id")
    distinct_id = stringify_id(distinct)
    if distinct_id is None:
        raise InvalidInput("Event has no `distinct_id`.", code="missing_distinct_id")

    raw_uuid = raw.get("uuid")
    if raw_uuid in (None, ""):
        event_uuid = uuid7(int(now.timestamp() * 1000))
    elif isinstance(raw_uuid, str) and _CANONICAL_UUID.fullmatch(raw_uuid):
        event_uuid = raw_uuid.lower()  # the SDKs' form: no need to parse it
    else:
        try:
            event_uuid = str(_uuid.UUID(str(raw_uuid)))
        except (ValueError, TypeError, AttributeError):
            raise InvalidInput(f"`uuid` is not a valid UUID: {str(raw_uuid)[:64]!r}.",
                               code="invalid_uuid") from None

    raw_ts = raw.get("timestamp")
    timestamp = parse_timestamp(raw_ts)
    if raw_ts not in (None, "") and timestamp is None:
        raise InvalidInput(f"`timestamp` is not an ISO-8601 date: {str(raw_ts)[:64]!r}.",
                           code="invalid_timestamp")
    event_sent_at = parse_timestamp(raw.get("sent_at")) or sent_at
    try:
        ts = correct_timestamp(timestamp=timestamp, offset_ms=raw.get("offset"), sent_at=event_sent_at,
                               now=now, ignore_sent_at=props.get("$ignore_sent_at") is True)
    except (OverflowError, ValueError):
        raise InvalidInput("`timestamp`, `offset` or `sent_at` is out of range.", code="invalid_timestamp") from None

    # Person updates: top-level wins over the copy inside properties. Like PostHog, the
    # stored event keeps them in its properties.
    set_ = _merge_dict(props.get("$set"), raw.get("$set"))
    set_once = _merge_dict(props.get("$set_once"), raw.get("$set_once"))
    if set_:
        props["$set"] = set_
    if set_once:
        props["$set_once"] = set_once
    unset_raw = raw.get("$unset", props.get("$unset"))
    unset: list[str] | None = None
    if isinstance(unset_raw, list):
        unset = [k for k in unset_raw if isinstance(k, str)] or None
    elif isinstance(unset_raw, dict):
        unset = [k for k in unset_raw if isinstance(k, str)] or None
    props.pop("token", None)

    return Event(uuid=event_uuid, event=name, distinct_id=distinct_id, timestamp=ts,
                 properties=props, set=set_, set_once=set_once, unset=unset)


# Identity events (sightline.persons.identity applies their own rules) and the property keys
# that give an event more identity work than finding its distinct_id's person.
IDENTITY_EVENTS = frozenset({"$groupidentify", "$identify", "$create_alias", "$merge_dangerously"})
_IDENTITY_PROPERTY_KEYS = frozenset({"$groups", "$process_person_profile"})

# Keys whose presence sends an event down the full path of normalize_event.
_SLOW_EVENT_KEYS = ("offset", "sent_at", "$set", "$set_once", "$unset")
_SLOW_PROPERTY_KEYS = ("$set", "$set_once", "$unset", "$ignore_sent_at", "token")


def _batch_skew(now: datetime, sent_at: datetime | None) -> timedelta:
    """What :func:`correct_timestamp` adds to an event's own timestamp for this ``sent_at``."""
    if sent_at is None:
        return timedelta(0)
    skew = sent_at - now
    excess = abs(skew) - SKEW_DEADBAND
    if excess <= timedelta(0):
        return timedelta(0)
    return -excess if skew > timedelta(0) else excess


_SLOW_EVENT_KEY_SET = frozenset(_SLOW_EVENT_KEYS)
_SLOW_PROPERTY_KEY_SET = frozenset(_SLOW_PROPERTY_KEYS)
_uuid_fullmatch = _CANONICAL_UUID.fullmatch
_fromisoformat = datetime.fromisoformat


def _normalize_common(raw: Any, now: datetime, skew: timedelta, copy: bool = True,
                      future: datetime | None = None) -> Event | None:
    """The SDKs' everyday event (string name, distinct_id, canonical uuid and ISO timestamp,
    a properties object without person updates or a token, no offset or per-event sent_at)
    in fewer steps; ``None`` for anything else, which takes the full path. Same result as
    :func:`normalize_event` (the tests compare both on generated events). ``copy=False``
    lets the event own ``raw``'s properties dict instead of a copy (the caller gives ``raw``
    up); ``future`` is ``now + FUTURE_LIMIT``, precomputed by a batch."""
    if type(raw) is not dict:
        return None
    name = raw.get("event")
    props = raw.get("properties")
    distinct = raw.get("distinct_id")
    raw_uuid = raw.get("uuid")
    raw_ts = raw.get("timestamp")
    if (type(name) is not str or type(props) is not dict or type(distinct) is not str
            or type(raw_uuid) is not str or type(raw_ts) is not str):
        return None
    if (not 0 < len(name) <= MAX_EVENT_NAME_LENGTH or "\x00" in name or name in SILENTLY_DROPPED
            or not name.strip() or not 0 < len(distinct) <= MAX_DISTINCT_ID_LENGTH
            or "\x00" in distinct or not distinct.strip() or len(raw_uuid) != 36):
        return None
    if not raw.keys().isdisjoint(_SLOW_EVENT_KEY_SET) or not props.keys().isdisjoint(_SLOW_PROPERTY_KEY_SET):
        return None
    if not _uuid_fullmatch(raw_uuid):
        return None
    try:
        ts = _fromisoformat(raw_ts)
    except ValueError:
        return None
    tz = ts.tzinfo
    if tz is None:
        return None
    try:
        if tz is not UTC:
            ts = ts.astimezone(UTC)
        if skew:
            ts = ts + skew
        if ts > (now + FUTURE_LIMIT if future is None else future):
            ts = now
        if ts < EPOCH:
            ts = EPOCH
    except (OverflowError, ValueError):
        return None
    event = Event(raw_uuid.lower(), name, distinct, ts, dict(props) if copy else props)
    # no person updates here (they take the full path), so only these decide (props are hot now)
    if name not in IDENTITY_EVENTS and props.keys().isdisjoint(_IDENTITY_PROPERTY_KEYS):
        event.plain = True
    return event


def normalize_batch(raw_events: list[Any], *, now: datetime | None = None,
                    sent_at: datetime | None = None, copy: bool = True) -> NormalizedBatch:
    """Normalize every event of a request; invalid ones become :class:`Rejection` rows.

    The batch rule (docs/api.md): valid events are stored even when others in the same
    request are rejected; the request fails with 400 only when *no* event is valid.
    ``copy=False``: the caller gives ``raw_events`` up, so events may own (and later change)
    their raw properties dicts instead of copies (the capture endpoints do this).
    """
    now = now or datetime.now(UTC)
    events: list[Event] = []
    rejected: list[Rejection] = []
    dropped = 0
    skew = _batch_skew(now, sent_at)
    future = now + FUTURE_LIMIT
    dumps, non_str_keys, common = orjson.dumps, orjson.OPT_NON_STR_KEYS, _normalize_common
    append = events.append
    for index, raw in enumerate(raw_events):
        event = common(raw, now, skew, copy, future)
        if event is None:
            try:
                event = normalize_event(raw, now=now, sent_at=sent_at)
            except InvalidInput as exc:
                rejected.append(Rejection(index, exc.code, exc.detail))
                continue
            if event is None:
                dropped += 1
                continue
        try:
            encoded = dumps(event.properties, option=non_str_keys)
        except TypeError as exc:
            rejected.append(Rejection(index, "invalid_properties",
                                      f"Event properties cannot be stored as JSON: {exc}"))
            continue
        size = len(encoded)
        if size > MAX_EVENT_BYTES:
            rejected.append(Rejection(index, "event_too_large",
                                      f"Event properties are {size} bytes; the limit is "
                                      f"{MAX_EVENT_BYTES}."))
            continue
        event.properties_json = encoded.decode()
        append(event)
    return NormalizedBatch(events, rejected, dropped)
