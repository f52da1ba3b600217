"""The flag service in process: cohorts (dynamic and static) in evaluation and in the
local-evaluation payload, dependency chains, hot reload across two metadata connections."""

from __future__ import annotations

import orjson
import pytest

import sightline
from sightline.flags.service import FlagService, FlagsRequest, parse_flags_request
from sightline.meta import MetaStore


@pytest.fixture
def core(tmp_path):
    s = sightline.open(tmp_path / "data")
    s.writer  # start the writer: stored person properties come from its identity state
    yield s
    s.close()


def req(distinct_id: str, **kw) -> FlagsRequest:
    return parse_flags_request({"distinct_id": distinct_id, **kw})


def test_cohorts_in_evaluation_and_definitions(core):
    svc, pid = core.flags, core.project.id
    pro = svc.create_cohort(pid, "Pro users", {"properties": {"type": "OR", "values": [
        {"type": "AND", "values": [{"key": "plan", "value": "pro", "type": "person"}]}]}})
    nested = svc.create_cohort(pid, "Pro in FR", {"properties": {"type": "AND", "values": [
        {"type": "cohort", "value": pro}, {"key": "country", "value": "FR", "type": "person"}]}})
    vip = svc.create_cohort(pid, "VIPs", is_static=True, members=["vip-1"])
    svc.create_flag(pid, {"key": "pro-feature", "filters": {"groups": [
        {"properties": [{"type": "cohort", "value": pro}], "rollout_percentage": 100}]}}, "t")
    svc.create_flag(pid, {"key": "fr-feature", "filters": {"groups": [
        {"properties": [{"type": "cohort", "value": nested}], "rollout_percentage": 100}]}}, "t")
    svc.create_flag(pid, {"key": "vip-feature", "filters": {"groups": [
        {"properties": [{"type": "cohort", "value": vip}], "rollout_percentage": 100}]}}, "t")

    def values(r):
        res, errors = svc.evaluate(pid, r)
        assert not errors
        return {k: v.value for k, v in res.items()}

    assert values(req("a", person_properties={"plan": "pro", "country": "FR"})) == {
        "pro-feature": True, "fr-feature": True, "vip-feature": False}
    assert values(req("vip-1")) == {"pro-feature": False, "fr-feature": False, "vip-feature": True}
    # stored person properties (from the live identity state) count too
    core.capture("$set", "stored-pro", {"$set": {"plan": "pro"}})
    assert values(req("stored-pro"))["pro-feature"] is True
    # a static member who is merged into another person keeps membership through the person
    core.capture("$identify", "vip-merged", {"$anon_distinct_id": "vip-1"})
    assert values(req("vip-merged"))["vip-feature"] is True

    body = orjson.loads(svc.definitions(pid, send_cohorts=True)[0])
    assert set(body["cohorts"]) == {str(pro), str(nested)}  # static cohorts are left to the server
    assert body["cohorts"][str(pro)]["type"] == "OR"
    legacy = orjson.loads(svc.definitions(pid, send_cohorts=False)[0])
    inlined = next(f for f in legacy["flags"] if f["key"] == "pro-feature")
    assert inlined["filters"]["groups"][0]["properties"] == [{"key": "plan", "value": "pro", "type": "person"}]


def test_dependency_chains_in_definitions(core):
    svc, pid = core.flags, core.project.id
    svc.create_flag(pid, {"key": "base", "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}, "t")
    dep = {"type": "flag", "key": "base", "operator": "flag_evaluates_to", "value": True}
    svc.create_flag(pid, {"key": "mid", "filters": {"groups": [{"properties": [dep]}]}}, "t")
    dep2 = {"type": "flag", "key": "mid", "operator": "flag_evaluates_to", "value": True}
    svc.create_flag(pid, {"key": "top", "filters": {"groups": [{"properties": [dep2]}]}}, "t")
    body = orjson.loads(svc.definitions(pid, send_cohorts=True)[0])
    top = next(f for f in body["flags"] if f["key"] == "top")
    assert top["filters"]["groups"][0]["properties"][0]["dependency_chain"] == ["base", "mid"]
    assert svc.evaluate(pid, req("x"))[0]["top"].enabled


def test_changes_from_another_connection_are_picked_up(core, tmp_path):
    pid = core.project.id
    assert not core.flags.has_active_flags(pid)
    other = MetaStore(tmp_path / "data" / "meta.sqlite")  # what the CLI opens
    try:
        FlagService(other).create_flag(pid, {"key": "from-elsewhere", "filters": {
            "groups": [{"properties": [], "rollout_percentage": 100}]}}, "cli")
    finally:
        other.close()
    assert core.flags.has_active_flags(pid)
    assert core.flags.evaluate(pid, req("u"))[0]["from-elsewhere"].enabled
