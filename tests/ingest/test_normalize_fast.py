"""The fast path of normalize_batch gives exactly what the full per-event rules give."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sightline.ingest.normalize import _batch_skew, _normalize_common, normalize_batch, normalize_event

UTC = timezone.utc
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
SDK_EVENT = {"event": "$pageview", "distinct_id": "user_1", "uuid": "0190A6B0-1234-7abc-8def-0123456789ab",
             "timestamp": "2026-05-01T11:59:00.123Z",
             "properties": {"$current_url": "https://x.test/a", "$browser": "Chrome", "$lib": "web"}}


def _fields(ev):
    return None if ev is None else (ev.uuid, ev.event, ev.distinct_id, ev.timestamp, ev.properties, ev.set,
                                    ev.set_once, ev.unset)


def _same_as_full(raw, sent_at):
    fast = _normalize_common(raw, NOW, _batch_skew(NOW, sent_at))
    if fast is None:
        return False
    assert _fields(fast) == _fields(normalize_event(raw, now=NOW, sent_at=sent_at))
    return True


def test_the_sdk_shape_takes_the_fast_path_with_every_skew():
    for sent_at in (None, NOW, NOW + timedelta(seconds=100), NOW + timedelta(minutes=10),
                    NOW - timedelta(hours=3), NOW + timedelta(days=3)):
        assert _same_as_full(dict(SDK_EVENT), sent_at)
    future = {**SDK_EVENT, "timestamp": "2027-01-01T00:00:00+02:00"}
    assert _same_as_full(future, None) and _normalize_common(future, NOW, timedelta(0)).timestamp == NOW
    old = {**SDK_EVENT, "timestamp": "1960-01-01T00:00:00Z"}
    assert _same_as_full(old, None)


def test_anything_unusual_takes_the_full_path():
    unusual = [
        {**SDK_EVENT, "offset": 50}, {**SDK_EVENT, "sent_at": "2026-05-01T12:00:00Z"},
        {**SDK_EVENT, "$set": {"a": 1}}, {**SDK_EVENT, "properties": {"$set_once": {"a": 1}}},
        {**SDK_EVENT, "properties": {"token": "phc"}}, {**SDK_EVENT, "properties": {"$ignore_sent_at": True}},
        {**SDK_EVENT, "distinct_id": 42}, {**SDK_EVENT, "distinct_id": "  "}, {**SDK_EVENT, "distinct_id": "a\x00"},
        {**SDK_EVENT, "distinct_id": "x" * 201}, {**SDK_EVENT, "event": "$performance_event"},
        {**SDK_EVENT, "event": " "}, {**SDK_EVENT, "uuid": "not-a-uuid"}, {**SDK_EVENT, "uuid": None},
        {**SDK_EVENT, "timestamp": "2026-05-01 11:59:00"}, {**SDK_EVENT, "timestamp": "yesterday"},
        {**SDK_EVENT, "timestamp": "2026-05-01t11:59:00z"}, {**SDK_EVENT, "properties": None},
        {k: v for k, v in SDK_EVENT.items() if k != "timestamp"}, ["not", "an", "event"],
    ]
    for raw in unusual:
        assert _normalize_common(raw, NOW, timedelta(0)) is None, raw
    # and the batch still applies the full rules to them
    batch = normalize_batch(unusual, now=NOW)
    assert len(batch.events) + len(batch.rejected) + batch.dropped == len(unusual)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(min_size=0, max_size=8), did=st.one_of(st.text(max_size=10), st.integers()),
       ts=st.one_of(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1),
                                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                            timezone(-timedelta(hours=8))])).map(
                                                                lambda d: d.isoformat()),
                    st.text(max_size=30)),
       props=st.dictionaries(st.sampled_from(["$browser", "$set", "token", "a", "$ignore_sent_at"]),
                             st.one_of(st.none(), st.booleans(), st.text(max_size=5),
                                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
                             max_size=4),
       sent_skew=st.one_of(st.none(), st.integers(-10 ** 7, 10 ** 7)))
def test_fast_path_agrees_with_the_full_rules(name, did, ts, props, sent_skew):
    raw = {"event": name, "distinct_id": did, "uuid": "0190a6b0-1234-7abc-8def-0123456789ab",
           "timestamp": ts, "properties": props}
    sent_at = None if sent_skew is None else NOW + timedelta(seconds=sent_skew)
    _same_as_full(raw, sent_at)


def test_plain_flag_only_on_events_identity_can_take_inline():
    """``Event.plain`` (set by the fast path) promises needs_full_process() is False; the
    writer's process_batch relies on it, so an identity event or one with groups or
    ``$process_person_profile`` must never carry it."""
    from sightline.persons.identity import Changes, IdentityState, needs_full_process

    shapes = [
        dict(SDK_EVENT),
        {**SDK_EVENT, "event": "$identify", "properties": {"$anon_distinct_id": "anon"}},
        {**SDK_EVENT, "event": "$create_alias", "properties": {"alias": "other"}},
        {**SDK_EVENT, "event": "$merge_dangerously", "properties": {"alias": "other"}},
        {**SDK_EVENT, "event": "$groupidentify", "properties": {"$group_type": "org", "$group_key": "o1"}},
        {**SDK_EVENT, "properties": {"$groups": {"org": "o1"}}},
        {**SDK_EVENT, "properties": {"$process_person_profile": False}},
        {**SDK_EVENT, "properties": {"$process_person_profile": True}},
        {**SDK_EVENT, "properties": {"$set": {"a": 1}}},
        {**SDK_EVENT, "$set_once": {"a": 1}},
        {**SDK_EVENT, "properties": {"$unset": ["a"]}},
        {**SDK_EVENT, "properties": {}},
    ]
    flagged = []
    for raw in shapes:
        ev = normalize_batch([raw], now=NOW).events[0]
        assert not (ev.plain and needs_full_process(ev)), raw
        flagged.append(ev.plain)
    assert flagged == [True] + [False] * 10 + [True]
    # process_batch gives the same persons and changes with the flag as without it
    def resolve(clear: bool):
        state, changes = IdentityState(), Changes()
        events = normalize_batch([{**s, "uuid": f"0190a6b0-1234-7abc-8def-{i:012d}"} for i, s in
                                  enumerate(shapes * 2)], now=NOW).events
        if clear:
            for e in events:
                e.plain = False
        state.process_batch(1, events, changes)
        return [(e.person_id, e.groups) for e in events], sorted(state.persons), sorted(changes.distinct_ids.items())
    assert resolve(False) == resolve(True)
