"""Identity rules (spec analytics §7 vectors), through the pure state and through storage."""

from datetime import datetime, timedelta, timezone

import pytest

import sightline
from sightline.ingest.normalize import normalize_event
from sightline.persons.identity import Changes, IdentityState, is_illegal_id, person_uuid

UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def ev(name, distinct_id, props=None, minutes=0, **top):
    raw = {"event": name, "distinct_id": distinct_id, "properties": props or {},
           "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(), **top}
    return normalize_event(raw, now=T0 + timedelta(days=1), sent_at=None)


class World:
    def __init__(self):
        self.state = IdentityState()
        self.changes = Changes()

    def send(self, event):
        self.state.process(1, event, self.changes)
        return event

    def person(self, distinct_id):
        return self.state.person_for(1, distinct_id)


def test_identify_merges_anonymous_into_identified():
    w = World()
    pv = w.send(ev("$pageview", "a1"))
    w.send(ev("$identify", "u@x", {"$anon_distinct_id": "a1"}, minutes=1))
    after = w.send(ev("$pageview", "u@x", minutes=2))
    p = w.person("u@x")
    assert sorted(p.distinct_ids) == ["a1", "u@x"]
    assert p.is_identified
    assert w.person("a1") is p
    # the anonymous pageview keeps the id it was ingested with, which resolves to the person
    assert pv.person_id == p.id == after.person_id


def test_identify_when_both_have_persons_merges_with_override():
    w = World()
    anon = w.send(ev("$pageview", "a1"))
    w.send(ev("$pageview", "u@x", minutes=1))
    w.send(ev("$identify", "u@x", {"$anon_distinct_id": "a1"}, minutes=2))
    p = w.person("u@x")
    assert w.person("a1") is p
    assert anon.person_id != p.id
    assert w.state.overrides[(1, anon.person_id)] == p.id
    assert w.changes.merges and w.changes.merges[0].source_person_id == anon.person_id


def test_two_identified_persons_are_not_merged():
    w = World()
    w.send(ev("$identify", "A", {"$anon_distinct_id": "device"}))
    w.send(ev("$identify", "C", {"$anon_distinct_id": "A"}, minutes=1))
    assert w.person("A") is not w.person("C")
    assert [x.type for x in w.changes.warnings] == ["cannot_merge_already_identified"]


def test_merge_dangerously_ignores_the_guard():
    w = World()
    w.send(ev("$identify", "A", {"$anon_distinct_id": "d1"}))
    w.send(ev("$identify", "C", {"$anon_distinct_id": "d2"}))
    w.send(ev("$merge_dangerously", "C", {"alias": "A"}, minutes=1))
    assert w.person("A") is w.person("C")
    assert sorted(w.person("C").distinct_ids) == ["A", "C", "d1", "d2"]


def test_create_alias():
    w = World()
    w.send(ev("$pageview", "x"))
    w.send(ev("$create_alias", "d", {"alias": "x"}, minutes=1))
    assert w.person("x") is w.person("d")


@pytest.mark.parametrize("bad", ["anonymous", "NULL".lower(), "undefined", "0", "[object Object]", "  "])
def test_illegal_ids_never_merge(bad):
    assert is_illegal_id(bad)
    w = World()
    w.send(ev("$pageview", bad if bad.strip() else "blank"))
    w.send(ev("$identify", "u", {"$anon_distinct_id": bad}))
    assert w.person("u").distinct_ids == ["u"]
    assert w.changes.warnings[0].type == "cannot_merge_with_illegal_distinct_id"


def test_set_set_once_unset_and_merge_property_rule():
    w = World()
    w.send(ev("e", "p", {"$set_once": {"initial_url": "/blog"}}))
    w.send(ev("e", "p", {"$set_once": {"initial_url": "/pricing"}}, minutes=1))
    w.send(ev("e", "p", {"$set": {"plan": "free"}}, minutes=2))
    w.send(ev("e", "p", {"$set": {"plan": "pro"}}, minutes=3))
    assert w.person("p").properties == {"initial_url": "/blog", "plan": "pro"}
    w.send(ev("e", "p", {"$unset": ["plan"]}, minutes=4))
    assert w.person("p").properties == {"initial_url": "/blog"}
    # merge B {name: B, phone: 1} into A {name: A} → {name: A, phone: 1}
    w.send(ev("e", "A", {"$set": {"name": "A"}}))
    w.send(ev("e", "B", {"$set": {"name": "B", "phone": 1}}))
    w.send(ev("$merge_dangerously", "A", {"alias": "B"}, minutes=5))
    assert w.person("A").properties == {"name": "A", "phone": 1}


def test_later_timestamp_wins_so_backfills_do_not_overwrite():
    w = World()
    w.send(ev("e", "p", {"$set": {"plan": "pro"}}, minutes=10))
    w.send(ev("e", "p", {"$set": {"plan": "free"}}, minutes=1))  # an older event arrives late
    assert w.person("p").properties["plan"] == "pro"
    # set_once: the earliest event's value wins, whatever the arrival order
    w.send(ev("e", "p", {"$set_once": {"first": "late"}}, minutes=10))
    w.send(ev("e", "p", {"$set_once": {"first": "early"}}, minutes=1))
    assert w.person("p").properties["first"] == "early"
    # an unset older than the last set does nothing
    w.send(ev("e", "p", {"$unset": ["plan"]}, minutes=5))
    assert w.person("p").properties["plan"] == "pro"


def test_personless_events_then_identify_share_the_person_id():
    w = World()
    anon = w.send(ev("$pageview", "anon", {"$process_person_profile": False}))
    assert anon.person_id == person_uuid(1, "anon")
    assert w.person("anon") is None  # no profile was created
    w.send(ev("$identify", "user", {"$anon_distinct_id": "anon"}, minutes=1))
    assert w.person("user").id == anon.person_id


def test_groups_and_groupidentify():
    w = World()
    e = w.send(ev("$pageview", "u", {"$groups": {"company": "acme", "project": 7}}))
    assert e.groups == {0: "acme", 1: "7"}
    w.send(ev("$groupidentify", "u", {"$group_type": "company", "$group_key": "acme",
                                      "$group_set": {"industry": "tools"}}, minutes=1))
    assert w.state.groups[(1, 0, "acme")].properties == {"industry": "tools"}
    for i in range(5):
        w.send(ev("e", "u", {"$groups": {f"t{i}": "k"}}))
    assert len(w.state.group_types[1]) == 5
    assert any(x.type == "too_many_group_types" for x in w.changes.warnings)


def test_state_survives_storage_round_trip(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        s.ingest([{"event": "$pageview", "distinct_id": "a1", "timestamp": "2024-01-01T00:00:00Z"},
                  {"event": "$pageview", "distinct_id": "u", "timestamp": "2024-01-01T00:01:00Z",
                   "$set": {"plan": "pro"}},
                  {"event": "$identify", "distinct_id": "u", "timestamp": "2024-01-01T00:02:00Z",
                   "properties": {"$anon_distinct_id": "a1"}},
                  {"event": "$pageview", "distinct_id": "x", "timestamp": "2024-01-01T00:03:00Z",
                   "properties": {"$groups": {"company": "acme"}}}])
    with sightline.open(tmp_path / "d") as s:
        state = s._load_identity()
        p = state.person_for(s.project.id, "a1")
        assert p is state.person_for(s.project.id, "u")
        assert sorted(p.distinct_ids) == ["a1", "u"] and p.properties == {"plan": "pro"} and p.is_identified
        assert state.group_types[s.project.id] == {"company": 0}
        rows = s.storage.execute(
            "SELECT count(DISTINCT coalesce(o.override_person_id, e.person_id)) FROM events e "
            "LEFT JOIN person_overrides o ON o.project_id = e.project_id AND o.old_person_id = e.person_id "
            "WHERE e.distinct_id IN ('a1', 'u')").rows
        assert rows == [(1,)]
        merges = s.storage.execute("SELECT reason, source_distinct_ids FROM person_merges").rows
        assert merges == [("$identify", '["a1"]')]


def test_set_beats_set_once_whatever_the_arrival_order():
    w = World()
    w.send(ev("e", "p", {"$set_once": {"k": "once"}}, minutes=10))
    w.send(ev("e", "p", {"$set": {"k": "set"}}, minutes=1))  # earlier event, arriving later
    assert w.person("p").properties["k"] == "set"


def test_merge_does_not_resurrect_a_key_the_target_removed():
    w = World()
    w.send(ev("e", "B", {"$set": {"k": "old"}}, minutes=0))
    w.send(ev("e", "A", {"$set": {"k": "a"}}, minutes=1))
    w.send(ev("e", "A", {"$unset": ["k"]}, minutes=2))
    w.send(ev("$merge_dangerously", "A", {"alias": "B"}, minutes=3))
    assert "k" not in w.person("A").properties
