"""The unmodified posthog-python SDK against a live server: everything it sends is stored."""

import uuid

import pytest
from posthog import Posthog


def client(server, **kwargs) -> Posthog:
    errors = []
    ph = Posthog(server.token, host=server.url, max_retries=0,
                 on_error=lambda e, batch: errors.append(e), **kwargs)
    ph._test_errors = errors
    return ph


@pytest.mark.parametrize("mode", [{}, {"gzip": True}, {"capture_mode": "v1"},
                                  {"capture_mode": "v1", "capture_compression": "gzip"},
                                  {"capture_mode": "v1", "capture_compression": "deflate"}])
def test_captures_reach_storage_in_every_sdk_mode(server, mode):
    run = uuid.uuid4().hex[:8]
    ph = client(server, **mode)
    sent = set()
    for i in range(250):  # more than one batch (flush_at=100)
        sent.add(ph.capture(f"sdk-event-{run}", distinct_id=f"user-{run}-{i % 7}",
                            properties={"i": i, "nested": {"a": [1, 2]}, "unicode": "žluťoučký 🐎"}))
    ph.flush()
    ph.shutdown()
    assert not ph._test_errors
    stored = server.events(event=f"sdk-event-{run}")
    assert {e["uuid"] for e in stored} == sent
    one = next(e for e in stored if e["properties"]["i"] == 3)
    assert one["distinct_id"] == f"user-{run}-3"
    assert one["properties"]["nested"] == {"a": [1, 2]}
    assert one["properties"]["unicode"] == "žluťoučký 🐎"
    assert one["properties"]["$lib"] == "posthog-python"


def test_identify_alias_set_and_groups(server):
    run = uuid.uuid4().hex[:8]
    anon, user, alias = f"anon-{run}", f"user-{run}@example.com", f"crm-{run}"
    ph = client(server)
    ph.capture("$pageview", distinct_id=anon, properties={"$current_url": "https://a.io/pricing"})
    ph.capture("$identify", distinct_id=user, properties={"$anon_distinct_id": anon,
                                                          "$set": {"email": user, "plan": "free"}})
    ph.set(distinct_id=user, properties={"plan": "pro"})
    ph.set_once(distinct_id=user, properties={"first_seen_plan": "free"})
    ph.alias(previous_id=alias, distinct_id=user)
    ph.capture("crm synced", distinct_id=alias)
    ph.group_identify("company", f"acme-{run}", {"name": "Acme", "employees": 11}, distinct_id=user)
    ph.capture("project created", distinct_id=user, groups={"company": f"acme-{run}"})
    ph.flush()
    ph.shutdown()
    assert not ph._test_errors

    persons = server.persons(distinct_id=anon)
    assert len(persons) == 1
    person = persons[0]
    assert sorted(person["distinct_ids"]) == sorted([anon, user, alias])
    assert person["is_identified"] is True
    assert person["properties"]["plan"] == "pro"
    assert person["properties"]["email"] == user
    assert person["properties"]["first_seen_plan"] == "free"

    events = server.events(distinct_id=user)
    names = sorted(e["event"] for e in events)
    assert names == sorted(["$pageview", "$identify", "$set", "$set_once", "$create_alias", "crm synced",
                            "$groupidentify", "project created"])
    assert {e["person_id"] for e in events} == {person["id"]}
    pageview = next(e for e in events if e["event"] == "$pageview")
    assert pageview["distinct_id"] == anon
    created = next(e for e in events if e["event"] == "project created")
    assert created["properties"]["$groups"] == {"company": f"acme-{run}"}


def test_retry_with_same_uuid_is_stored_once(server):
    run = uuid.uuid4().hex[:8]
    ph = client(server)
    eid = str(uuid.uuid4())
    for _ in range(3):
        ph.capture(f"retry-{run}", distinct_id="d", uuid=eid)
        ph.flush()
    ph.shutdown()
    assert [e["uuid"] for e in server.events(event=f"retry-{run}")] == [eid]
