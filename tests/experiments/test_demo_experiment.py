"""`sightline demo` leaves a running "New checkout" experiment whose exposures match the data."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sightline.cli import main
from sightline.demo import _default_end, checkout_variant, generate


def test_demo_creates_the_new_checkout_experiment(tmp_path):
    data = tmp_path / "demo"
    end = _default_end()
    run = CliRunner().invoke
    r = run(main, ["demo", "--data-dir", str(data), "--events", "20000", "--days", "20", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = run(main, ["experiments", "list", "--data-dir", str(data), "--json"])
    [exp] = json.loads(r.output)
    assert exp["name"] == "New checkout" and exp["feature_flag_key"] == "new-checkout"
    assert exp["status"] == "running" and exp["metrics"][0]["series"][0]["event"] == "purchase"
    r = run(main, ["experiments", "results", "new-checkout", "--data-dir", str(data), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    # the generator is deterministic: count the exposed users per variant (ids are user ids)
    if _default_end() != end:
        return  # the hour turned while the demo ran: the data is of another window
    exposed = {e["distinct_id"] for e in generate(20000, seed=42, days=20, end=end)
               if e["event"] == "$feature_flag_called" and e["properties"]["$feature_flag"] == "new-checkout"}
    assert sum(out["exposures"].values()) > 0
    assert out["exposures"] == {v: sum(1 for d in exposed if checkout_variant(d) == v) for v in ("control", "test")}
    # running again does not add a second experiment
    run(main, ["demo", "--data-dir", str(data), "--events", "10", "--no-progress"])
    assert len(json.loads(run(main, ["experiments", "list", "--data-dir", str(data), "--json"]).output)) == 1
