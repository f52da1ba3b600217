"""Results and decisions over the Python API: ship, guardrail regressions roll back, sample-ratio
mismatch holds the decision, multiple-comparison correction, and the CLI (no server running)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

import sightline
from sightline.cli import main
from sightline.experiments import results as res
from sightline.experiments.service import ExperimentService

UTC = timezone.utc
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)


def _traffic(key: str, n: int, rates: dict, *, errors: dict | None = None, split: float = 0.5, seed: int = 1):
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        did = f"{key}-{i}"
        v = "control" if rnd.random() < split else "test"
        t = START + timedelta(minutes=10 + rnd.random() * 2000)
        events.append({"event": "$feature_flag_called", "distinct_id": did, "timestamp": t.isoformat(),
                       "properties": {"$feature_flag": key, "$feature_flag_response": v}})
        if rnd.random() < rates[v]:
            events.append({"event": "purchase", "distinct_id": did, "timestamp": (t + timedelta(minutes=5)).isoformat(),
                           "properties": {"amount": rnd.choice([10, 20, 30])}})
        if errors and rnd.random() < errors[v]:
            events.append({"event": "error", "distinct_id": did, "timestamp": (t + timedelta(minutes=2)).isoformat()})
    return events


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    data = tmp_path_factory.mktemp("res") / "data"
    core = sightline.open(data)
    events = (_traffic("win", 3000, {"control": 0.10, "test": 0.16})
              + _traffic("guard", 3000, {"control": 0.10, "test": 0.16}, errors={"control": 0.05, "test": 0.12}, seed=2)
              + _traffic("srm", 3000, {"control": 0.10, "test": 0.10}, split=0.56, seed=3))
    core.ingest(events)
    yield core, data
    core.close()


def _exp(core, key: str, **extra) -> dict:
    svc = ExperimentService(core.meta, core.flags)
    pid = core.project.id
    exp = svc.create(pid, {"name": key, "feature_flag_key": key,
                           "metrics": [{"metric_type": "funnel", "name": "Purchase", "series": [{"event": "purchase"}]}],
                           **extra}, "test")
    return svc.launch(pid, exp["id"], "test", start_date=START.isoformat())


def test_a_clear_winner_ships(db):
    core, _ = db
    out = res.compute(core, core.project, _exp(core, "win"), cumulative=False)
    rec = out["recommendation"]
    assert rec["action"] == "ship" and rec["variant"] == "test" and "Purchase" in rec["reason"]
    row = out["metrics"][0]["variants"][1]
    assert row["significant"] and row["chance_to_win"] > 0.95 and row["lift_interval"][0] > 0


def test_a_regressing_guardrail_blocks_shipping(db):
    core, _ = db
    exp = _exp(core, "guard", metrics_guardrails=[{"metric_type": "count", "name": "Errors", "goal": "decrease",
                                                   "source": {"event": "error"}}])
    out = res.compute(core, core.project, exp, cumulative=False)
    goal, guard = out["metrics"]
    assert goal["variants"][1]["significant"] and goal["variants"][1]["lift"] > 0
    g = guard["variants"][1]
    assert guard["role"] == "guardrail" and g["significant"] and g["lift"] > 0 and g["chance_to_win"] < 0.05
    rec = out["recommendation"]
    assert rec["action"] == "roll_back" and rec["variant"] == "control" and "Errors" in rec["reason"]


def test_sample_ratio_mismatch_holds_the_decision(db):
    core, _ = db
    out = res.compute(core, core.project, _exp(core, "srm"), cumulative=False)
    assert out["srm"]["mismatch"] and out["srm"]["p_value"] < 0.001 and out["srm"]["warning"]
    assert out["recommendation"]["action"] == "keep_running"
    assert "Sample ratio mismatch" in out["recommendation"]["reason"]
    assert "WARNING: Sample ratio mismatch" in res.table(out)


@pytest.mark.parametrize("how", ["holm", "bh"])
def test_frequentist_p_values_are_corrected_across_metrics(db, how):
    from sightline.experiments import stats

    core, _ = db
    secondary = [{"metric_type": "count", "source": {"event": "purchase"}},
                 {"metric_type": "mean", "source": {"event": "purchase", "math": "sum", "math_property": "amount"}}]
    exp = _exp(core, f"win-{how}", stats_config={"method": "frequentist", "multiple_comparisons": how},
               metrics_secondary=secondary)
    exp = {**exp, "feature_flag_key": "win"}      # read the "win" traffic
    out = res.compute(core, core.project, exp, cumulative=False)
    rows = [b["variants"][1] for b in out["metrics"]]
    raw = [r["p_value"] for r in rows]
    want = stats.holm(raw) if how == "holm" else stats.benjamini_hochberg(raw)
    assert [r["p_value_adjusted"] for r in rows] == pytest.approx(want)
    assert all(a >= p for a, p in zip(want, raw)) and any(a > p for a, p in zip(want, raw))
    assert all(r["significant"] == (r["p_value_adjusted"] < 0.05) for r in rows)


def test_cli_lifecycle_and_results_table(db, tmp_path):
    core, _ = db
    data = tmp_path / "cli"
    c2 = sightline.open(data)
    c2.ingest(_traffic("cli-flag", 2000, {"control": 0.1, "test": 0.18}, seed=5))
    c2.close()
    run = CliRunner().invoke
    r = run(main, ["experiments", "create", "--data-dir", str(data), "--name", "CLI test", "--flag", "cli-flag",
                   "--conversion", "purchase", "--method", "frequentist"])
    assert r.exit_code == 0, r.output
    assert "draft" in r.output and "cli-flag" in r.output
    r = run(main, ["experiments", "create", "--data-dir", str(data), "--name", "Bad", "--flag", "other",
                   "--variants", "control:50,test:60"])
    assert r.exit_code == 2 and "add up to 100" in r.output
    r = run(main, ["experiments", "results", "cli-flag", "--data-dir", str(data)])
    assert r.exit_code == 2 and "not been launched" in r.output
    r = run(main, ["experiments", "launch", "cli-flag", "--data-dir", str(data), "--start-date", START.isoformat()])
    assert r.exit_code == 0 and "running" in r.output, r.output
    r = run(main, ["experiments", "list", "--data-dir", str(data)])
    assert "CLI test" in r.output and "running" in r.output
    r = run(main, ["experiments", "results", "CLI test", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert "Recommendation: SHIP test" in r.output and "p (adj.)" in r.output
    rows = [ln.split() for ln in r.output.splitlines()]
    control = next(x for x in rows if x[:2] == ["purchase", "control"])
    test = next(x for x in rows if x[:1] == ["test"] and len(x) > 5)
    assert int(control[2].replace(",", "")) + int(test[1].replace(",", "")) == 2000 and test[-1] == "yes"
    r = run(main, ["experiments", "results", "cli-flag", "--data-dir", str(data), "--json"])
    assert r.exit_code == 0 and '"recommendation"' in r.output
    r = run(main, ["experiments", "stop", "cli-flag", "--data-dir", str(data), "--ship", "test"])
    assert r.exit_code == 0 and "shipped test" in r.output, r.output
    r = run(main, ["experiments", "show", "cli-flag", "--data-dir", str(data)])
    assert '"shipped_variant": "test"' in r.output
    r = run(main, ["flags", "list", "--data-dir", str(data)])
    assert "cli-flag" in r.output and "test:100" in r.output and "control:0" in r.output
