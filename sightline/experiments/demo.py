"""The demo's experiment: "New checkout" on the flag ``new-checkout`` (see :mod:`sightline.demo`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sightline.demo import EXPERIMENT_FLAG, _default_end

DEMO_EXPERIMENT = {
    "name": "New checkout",
    "feature_flag_key": EXPERIMENT_FLAG,
    "hypothesis": "A one-page checkout makes more of the users who reach billing buy a plan.",
    "parameters": {"feature_flag_variants": [{"key": "control", "rollout_percentage": 50},
                                             {"key": "test", "rollout_percentage": 50}]},
    "metrics": [{"metric_type": "funnel", "name": "Purchase conversion", "series": [{"event": "purchase"}]}],
    "metrics_secondary": [{"metric_type": "mean", "name": "Revenue per user",
                           "source": {"event": "purchase", "math": "sum", "math_property": "revenue"}}],
    "metrics_guardrails": [{"metric_type": "count", "name": "Cancellations per user", "goal": "decrease",
                            "source": {"event": "subscription_cancelled"}}],
}


def create_demo_experiment(core, days: int, *, end: datetime | None = None) -> dict | None:
    """Create and launch the demo experiment (running since the start of the demo data); nothing
    if the project already has an experiment on the flag."""
    from sightline.experiments.service import ExperimentService

    svc = ExperimentService(core.meta, core.flags)
    pid = core.project.id
    if any(e["feature_flag_key"] == EXPERIMENT_FLAG for e in svc.list_experiments(pid)):
        return None
    end = end or _default_end()  # where the demo data ends: its first day is the start
    exp = svc.create(pid, DEMO_EXPERIMENT, "sightline demo")
    return svc.launch(pid, exp["id"], "sightline demo", start_date=(end - timedelta(days=days)).isoformat())
