"""Per-event capture rules: required fields, ids, tokens and PostHog's clock-skew correction."""

from datetime import datetime, timedelta, timezone

import pytest

from sightline.errors import AuthenticationFailed, InvalidInput
from sightline.ingest.normalize import (correct_timestamp, normalize_batch, normalize_event,
                                        parse_timestamp, request_token, stringify_id, uuid7)

UTC = timezone.utc
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(h, m=0, s=0):
    return datetime(2024, 5, 1, h, m, s, tzinfo=UTC)


def test_skew_vector_from_rust_capture():
    # now 12:00, sent_at 12:10 (client clock 10 min fast), event at 11:00 → 10:52:30 (150 s deadband)
    assert correct_timestamp(timestamp=at(11), offset_ms=None, sent_at=at(12, 10), now=NOW) == at(10, 52, 30)


def test_skew_inside_deadband_is_ignored():
    now = at(12, 0, 40)
    assert correct_timestamp(timestamp=at(11), offset_ms=None, sent_at=at(12), now=now) == at(11)


@pytest.mark.parametrize("skew_s, correction_s", [(149, 0), (-149, 0), (151, -1), (-151, 1),
                                                    (7200, -(7200 - 150)), (-7200, 7200 - 150)])
def test_deadband_edges(skew_s, correction_s):
    ts = at(10)
    got = correct_timestamp(timestamp=ts, offset_ms=None, sent_at=NOW + timedelta(seconds=skew_s), now=NOW)
    assert got - ts == timedelta(seconds=correction_s)


def test_offset_means_now_minus_offset_and_wins_over_timestamp():
    got = correct_timestamp(timestamp=at(1), offset_ms=5000, sent_at=None, now=NOW)
    assert got == NOW - timedelta(seconds=5)


def test_no_time_at_all_means_now_and_far_future_is_clamped():
    assert correct_timestamp(timestamp=None, offset_ms=None, sent_at=None, now=NOW) == NOW
    future = NOW + timedelta(hours=30)
    assert correct_timestamp(timestamp=future, offset_ms=None, sent_at=None, now=NOW) == NOW
    near = NOW + timedelta(hours=20)
    assert correct_timestamp(timestamp=near, offset_ms=None, sent_at=None, now=NOW) == near


def test_ignore_sent_at_property_disables_correction():
    event = normalize_event({"event": "e", "distinct_id": "d", "timestamp": "2024-05-01T11:00:00Z",
                             "properties": {"$ignore_sent_at": True}}, now=NOW, sent_at=at(12, 10))
    assert event.timestamp == at(11)


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01T11:00:00Z", at(11)),
    ("2024-05-01T13:00:00+02:00", at(11)),
    ("2024-05-01T16:00:00+05", at(11)),
    ("2024-05-01 11:00:00", at(11)),
    ("2024-05-01T11:00:00.123456789Z", at(11) + timedelta(microseconds=123456)),
])
def test_lenient_timestamps(text, expected):
    assert parse_timestamp(text) == expected


def test_distinct_id_rules():
    assert stringify_id(42) == "42"
    assert stringify_id(True) == "true"
    assert stringify_id({"a": 1}) == '{"a":1}'
    assert stringify_id("a\x00b") == "a\ufffdb"
    assert len(stringify_id("x" * 500)) == 200
    assert stringify_id("   ") is None
    assert stringify_id(None) is None


def test_distinct_id_fallbacks_and_missing():
    e = normalize_event({"event": "e", "$distinct_id": "d1"}, now=NOW, sent_at=None)
    assert e.distinct_id == "d1"
    e = normalize_event({"event": "e", "properties": {"distinct_id": "d2"}}, now=NOW, sent_at=None)
    assert e.distinct_id == "d2"
    with pytest.raises(InvalidInput) as exc:
        normalize_event({"event": "e"}, now=NOW, sent_at=None)
    assert exc.value.code == "missing_distinct_id"


@pytest.mark.parametrize("raw, code", [
    ({"distinct_id": "d"}, "missing_event_name"),
    ({"event": "", "distinct_id": "d"}, "missing_event_name"),
    ({"event": 5, "distinct_id": "d"}, "missing_event_name"),
    ({"event": "e", "distinct_id": "d", "properties": [1]}, "invalid_properties"),
    ({"event": "e", "distinct_id": "d", "uuid": "not-a-uuid"}, "invalid_uuid"),
    ({"event": "e", "distinct_id": "d", "timestamp": "yesterday"}, "invalid_timestamp"),
    ("just a string", "invalid_event"),
])
def test_invalid_events(raw, code):
    with pytest.raises(InvalidInput) as exc:
        normalize_event(raw, now=NOW, sent_at=None)
    assert exc.value.code == code


def test_uuid_kept_or_generated_as_v7():
    e = normalize_event({"event": "e", "distinct_id": "d", "uuid": "0190A0B1-0000-7000-8000-000000000001"},
                        now=NOW, sent_at=None)
    assert e.uuid == "0190a0b1-0000-7000-8000-000000000001"
    e = normalize_event({"event": "e", "distinct_id": "d", "uuid": ""}, now=NOW, sent_at=None)
    assert e.uuid[14] == "7"
    assert uuid7() != uuid7()


def test_set_merges_top_level_over_properties_and_is_kept_on_the_event():
    e = normalize_event({"event": "$set", "distinct_id": "d", "$set": {"a": 1, "b": 2},
                         "properties": {"$set": {"a": 0, "c": 3}, "$unset": ["x"]}}, now=NOW, sent_at=None)
    assert e.set == {"a": 1, "b": 2, "c": 3}
    assert e.properties["$set"] == {"a": 1, "b": 2, "c": 3}
    assert e.unset == ["x"]


def test_performance_events_are_dropped_silently_and_batch_rule():
    batch = normalize_batch([{"event": "ok", "distinct_id": "d"}, {"event": "$performance_event", "distinct_id": "d"},
                             {"distinct_id": "nope"}], now=NOW)
    assert [e.event for e in batch.events] == ["ok"]
    assert batch.dropped == 1
    assert [(r.index, r.code) for r in batch.rejected] == [(2, "missing_event_name")]


def test_huge_event_is_rejected_but_neighbours_are_kept():
    batch = normalize_batch([{"event": "big", "distinct_id": "d", "properties": {"x": "y" * 2_000_000}},
                             {"event": "small", "distinct_id": "d"}], now=NOW)
    assert [e.event for e in batch.events] == ["small"]
    assert batch.rejected[0].code == "event_too_large"


def test_tokens():
    assert request_token(None, [{"event": "e", "properties": {"token": "t1"}}]) == "t1"
    assert request_token("batch", [{"event": "e", "api_key": "other"}]) == "batch"
    with pytest.raises(AuthenticationFailed) as exc:
        request_token(None, [{"api_key": "a"}, {"api_key": "b"}])
    assert exc.value.code == "mixed_tokens"
    with pytest.raises(AuthenticationFailed) as exc:
        request_token(None, [{"event": "e"}])
    assert exc.value.status == 401


def test_out_of_range_times_reject_only_that_event():
    batch = normalize_batch([{"event": "e", "distinct_id": "d", "offset": 1e14},
                             {"event": "e", "distinct_id": "d", "timestamp": "2024-01-01T00:00:00Z",
                              "sent_at": "9999-12-31T00:00:00Z"},
                             {"event": "ok", "distinct_id": "d"}], now=NOW)
    assert [r.code for r in batch.rejected] == ["invalid_timestamp", "invalid_timestamp"]
    assert [e.event for e in batch.events] == ["ok"]
