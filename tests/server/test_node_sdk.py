"""The unmodified posthog-node SDK against a live server: capture, identity and flags."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from browserkit import missing as skip_or_fail

SCRIPT = Path(__file__).resolve().parent.parent / "browser" / "node_sdk.mjs"
NODE_SDK = SCRIPT.parent / "node_modules" / "posthog-node" / "package.json"
VARIANTS = [("control", 34), ("test", 33), ("third", 33)]


def expected_variant(key: str, distinct_id: str) -> str:
    """PostHog's variant hash, written from the protocol's description (not Sightline's code)."""
    digest = hashlib.sha1(f"{key}.{distinct_id}variant".encode()).hexdigest()
    value = int(digest[:15], 16) / 0xFFFFFFFFFFFFFFF
    edge = 0.0
    for name, pct in VARIANTS:
        edge += pct / 100
        if value < edge:
            return name
    return VARIANTS[-1][0]


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None or not NODE_SDK.exists():
        skip_or_fail("node and tests/browser/node_modules/posthog-node are needed (make dev installs them)")
    return exe


def test_posthog_node_captures_identifies_and_evaluates_flags(server, node):
    run = uuid.uuid4().hex[:8]
    key = f"node-flag-{run}"
    flag = {"key": key, "name": "node", "active": True, "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "multivariate": {"variants": [{"key": k, "rollout_percentage": p} for k, p in VARIANTS]},
        "payloads": {"control": json.dumps({"color": "blue"}), "test": json.dumps({"color": "green"}),
                     "third": json.dumps({"color": "red"})}}}
    with server.api() as c:
        r = c.post("/api/projects/@current/feature_flags/", json=flag)
        assert r.status_code == 201, r.text
    ids = [f"flag-user-{run}-{i}" for i in range(40)]
    cfg = {"token": server.token, "host": server.url, "personalApiKey": server.api_key, "run": run,
           "flagKey": key, "flagIds": ids}
    proc = subprocess.run([node, str(SCRIPT), json.dumps(cfg)], capture_output=True, text=True,
                          timeout=120, cwd=SCRIPT.parent)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == []

    # flags: remote (/flags) == local (definitions) == the protocol's hash, for every id
    want = {i: expected_variant(key, i) for i in ids}
    assert out["remote"] == want
    assert out["local"] == want
    assert len(set(want.values())) == 3  # the ids really spread over the variants
    assert out["payload"] == {"color": {"control": "blue", "test": "green", "third": "red"}[want[ids[0]]]}

    # capture: every event stored with its properties
    stored = server.events(event=f"node-event-{run}")
    assert len(stored) == 120
    assert {e["distinct_id"] for e in stored} == {f"node-{run}-{i}" for i in range(5)}
    one = next(e for e in stored if e["properties"]["i"] == 7)
    assert one["properties"]["nested"] == {"a": [1, 2]} and one["properties"]["text"] == "žluťoučký 🐎"
    assert one["properties"]["$lib"] == "posthog-node"

    # identity: alias + identify made one person with both ids and the $set properties
    anon, user = f"anon-{run}", f"user-{run}@example.com"
    persons = server.persons(distinct_id=anon)
    assert len(persons) == 1
    assert sorted(persons[0]["distinct_ids"]) == sorted([anon, user])
    assert persons[0]["properties"]["plan"] == "pro"
    assert persons[0]["properties"]["email"] == user
    created = server.events(event="project created", distinct_id=user)
    assert len(created) == 1 and created[0]["properties"]["$groups"] == {"company": f"acme-{run}"}
    called = server.events(event="$feature_flag_called", distinct_id=user)
    assert [e["properties"]["$feature_flag"] for e in called] == [key]
    assert called[0]["properties"]["$feature_flag_response"] == out["called"] == expected_variant(key, user)
