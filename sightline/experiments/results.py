"""An experiment's results: per metric and variant the value, lift, interval, p-value or chance to
win and significance (multiple comparisons corrected), the sample-ratio check, a recommendation
(ship / keep running / roll back) with its reason, and the cumulative series for a chart.

The numbers come from :mod:`sightline.experiments.metrics` (sufficient statistics in SQL) and
:mod:`sightline.experiments.stats` (pure functions); this module only assembles and decides.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sightline.errors import SightlineError
from sightline.experiments import stats
from sightline.experiments.metrics import ExperimentSQL, Exposures, is_ratio
from sightline.experiments.service import METRIC_LISTS
from sightline.query.context import QueryContext

MAX_CUMULATIVE_METRICS = 3


class NotLaunched(SightlineError):
    status = 409
    type = "invalid_request"
    code = "not_launched"


def _f(x: Any) -> Any:
    """JSON-safe floats (NaN and infinities become None)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (tuple, list)):
        return [_f(v) for v in x]
    return x


def value_of(s: stats.MetricStats) -> float | None:
    if s.is_ratio:
        return s.sum / s.den_sum if s.den_sum else None
    return s.sum / s.n if s.n else None


def settings_for(cfg: dict, metric: dict) -> stats.StatsSettings:
    return stats.StatsSettings(method=cfg["method"], confidence_level=float(cfg["confidence_level"]),
                               sequential=bool(cfg.get("sequential")),
                               sequential_tuning=float(cfg.get("sequential_tuning") or 5000),
                               cuped=bool(cfg.get("cuped")), relative=True,
                               inverse=metric.get("goal") == "decrease")


def context(core, project) -> QueryContext:
    from sightline.query.runner import load_cohorts

    return QueryContext(core.storage, project.id, timezone=project.timezone, settings=project.settings,
                        cohorts=load_cohorts(core.meta, project.id),
                        timeout_s=float(project.settings.get("query_timeout_seconds") or 60))


def _outcome(c: stats.Comparison, significant: bool, goal: str) -> str:
    if not significant or c.error:
        return "inconclusive"
    better = c.lift_rel > 0 if goal == "increase" else c.lift_rel < 0
    return "better" if better else "worse"


def _metric_block(exp: dict, metric: dict, role: str, st: dict[str, stats.MetricStats]) -> dict:
    cfg = exp["stats_config"]
    settings = settings_for(cfg, metric)
    variants = [v["key"] for v in exp["parameters"]["feature_flag_variants"]]
    control = st["control"]
    rows = []
    for key in ["control"] + [v for v in variants if v != "control"]:
        s = st[key]
        row: dict[str, Any] = {"key": key, "exposures": s.n, "value": _f(value_of(s)), "sum": s.sum}
        if s.is_ratio:
            row["denominator_sum"] = s.den_sum
        if key != "control":
            c = stats.compare(control, s, settings)
            row.update({"lift": _f(c.lift_rel), "lift_interval": _f(list(c.ci_rel)), "lift_abs": _f(c.lift_abs),
                        "lift_abs_interval": _f(list(c.ci_abs)), "p_value": _f(c.p_value),
                        "p_value_adjusted": _f(c.p_value), "chance_to_win": _f(c.chance_to_win),
                        "risk": _f(list(c.risk)) if c.risk else None, "significant": bool(c.significant),
                        "cuped_applied": bool(c.cuped_applied), "error": c.error,
                        "_comparison": c})
        rows.append(row)
    return {"uuid": metric["uuid"], "name": metric["name"], "metric_type": metric["metric_type"], "role": role,
            "goal": metric.get("goal", "increase"), "ratio": is_ratio(metric),
            "capped": cfg.get("outlier_capping_percentile") is not None and metric["metric_type"] != "funnel",
            "variants": rows}


def _correct(blocks: list[dict], cfg: dict) -> None:
    """Holm or Benjamini–Hochberg over goal and secondary metrics × treatments (frequentist p-values);
    significance and the interval follow the adjusted p-value."""
    how = cfg.get("multiple_comparisons", "holm")
    alpha = 1 - float(cfg["confidence_level"])
    family = [row for b in blocks if b["role"] != "guardrail" for row in b["variants"]
              if row["key"] != "control" and row.get("p_value") is not None and not row.get("error")]
    if cfg["method"] != "frequentist" or how == "none" or len(family) < 2:
        return
    ps = [row["p_value"] for row in family]
    adjusted = stats.holm(ps) if how == "holm" else stats.benjamini_hochberg(ps)
    for row, p in zip(family, adjusted):
        row["p_value_adjusted"] = p
        row["significant"] = p < alpha
        lo, hi = stats.adjusted_ci(row["lift"], p, alpha)
        if hi - lo > row["lift_interval"][1] - row["lift_interval"][0]:
            row["lift_interval"] = _f([lo, hi])


def _pct(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x * 100:+.1f}%"


def _evidence(row: dict, cfg: dict) -> str:
    lo, hi = (row.get("lift_interval") or [None, None])
    level = f"{float(cfg['confidence_level']) * 100:g}%"
    interval = f"{level} interval {_pct(lo)} to {_pct(hi)}" if lo is not None and hi is not None else \
        f"{level} interval unbounded"
    if cfg["method"] == "bayesian":
        return f"{_pct(row['lift'])} ({interval}, chance to win {row['chance_to_win'] * 100:.1f}%)"
    p = row.get("p_value_adjusted")
    return f"{_pct(row['lift'])} ({interval}, p = {p:.3g})"


def recommend(exp: dict, exposures: Exposures, srm: stats.SRMResult, blocks: list[dict]) -> dict:
    """ship / keep_running / roll_back, and why (see docs/experiments.md, "How decisions are made")."""
    cfg = exp["stats_config"]
    stopped = exp["status"] == "stopped"
    variants = [v["key"] for v in exp["parameters"]["feature_flag_variants"]]
    treatments = [v for v in variants if v != "control"]

    def decision(action: str, reason: str, variant: str | None = None) -> dict:
        return {"action": action, "variant": variant, "reason": reason}

    if exposures.total == 0:
        return decision("keep_running", "No exposures yet: nobody has seen the experiment's flag since it started.")
    if srm.mismatch:
        counts = ", ".join(f"{k} {exposures.counts.get(k, 0):,}" for k in variants)
        return decision("keep_running", f"Sample ratio mismatch (p = {srm.p_value:.2g}): exposures ({counts}) do not "
                                        "match the flag's split, so the comparison is not trustworthy. Find the "
                                        "cause (exposure events sent only in one variant, bots, redirects) first.")
    minimum = int(cfg.get("minimum_exposures") or 100)
    short = [k for k in variants if exposures.counts.get(k, 0) < minimum]
    if short:
        return decision("keep_running", "Not enough exposures yet: " + ", ".join(
            f"{k} has {exposures.counts.get(k, 0):,}" for k in short) + f" (at least {minimum:,} per variant).")
    goals = [b for b in blocks if b["role"] == "goal"]
    guards = [b for b in blocks if b["role"] == "guardrail"]

    def row(block: dict, key: str) -> dict:
        return next(r for r in block["variants"] if r["key"] == key)

    def outcome(block: dict, key: str) -> str:
        r = row(block, key)
        return _outcome(r["_comparison"], r["significant"], block["goal"])

    winners, blocked, losers = [], {}, []
    for v in treatments:
        regress = [g for g in guards if outcome(g, v) == "worse"]
        goal_out = [outcome(b, v) for b in goals]
        if goal_out and all(o == "better" for o in goal_out):
            if regress:
                blocked[v] = regress
            else:
                winners.append(v)
        elif "worse" in goal_out or regress:
            losers.append((v, regress))
    if winners:
        first = goals[0]
        best = max(winners, key=lambda v: (row(first, v)["lift"] or 0) * (1 if first["goal"] == "increase" else -1))
        detail = "; ".join(f"{b['name']} {_evidence(row(b, best), cfg)}" for b in goals)
        tail = " No guardrail regressed." if guards else ""
        return decision("ship", f"{best} beats control on every goal metric: {detail}.{tail}", best)
    if blocked and len(blocked) + len(losers) == len(treatments):
        v, regress = next(iter(blocked.items()))
        detail = "; ".join(f"{g['name']} {_evidence(row(g, v), cfg)}" for g in regress)
        return decision("roll_back", f"{v} wins on its goals but regresses a guardrail ({detail}); keep control.",
                        "control")
    if losers and len(losers) == len(treatments):
        parts = []
        for v, regress in losers:
            bad = [b for b in goals if outcome(b, v) == "worse"] + regress
            parts.append("; ".join(f"{v} on {b['name']} {_evidence(row(b, v), cfg)}" for b in bad))
        return decision("roll_back", "Every variant is worse than control: " + "; ".join(parts) + ". Keep control.",
                        "control")
    first = goals[0] if goals else None
    if first is None:
        return decision("keep_running", "The experiment has no goal metric to decide on.")
    detail = "; ".join(f"{v} {_evidence(row(first, v), cfg)}" for v in treatments)
    if stopped:
        return decision("keep_running", f"Inconclusive: no variant differs significantly from control on "
                                        f"{first['name']} ({detail}). The experiment has stopped; rerun it with "
                                        "more traffic or keep control.")
    blocked_note = "".join(f" {v} regresses {', '.join(g['name'] for g in gs)}." for v, gs in blocked.items())
    return decision("keep_running", f"No variant differs significantly from control on {first['name']} yet "
                                    f"({detail}).{blocked_note}")


def _cumulative(exp: dict, metric: dict, series) -> list[dict]:
    settings = settings_for(exp["stats_config"], metric)
    out = []
    for day, st in series:
        variants: dict[str, dict] = {}
        for key, s in st.items():
            entry: dict[str, Any] = {"exposures": s.n, "value": _f(value_of(s))}
            if key != "control":
                c = stats.compare(st["control"], s, settings)
                entry.update({"lift": _f(c.lift_rel), "lift_interval": _f(list(c.ci_rel)),
                              "p_value": _f(c.p_value), "chance_to_win": _f(c.chance_to_win),
                              "significant": bool(c.significant)})
            variants[key] = entry
        out.append({"date": day.isoformat(), "variants": variants})
    return out


def compute(core, project, exp: dict, *, now: datetime | None = None, cumulative: bool = True) -> dict:
    """Results of experiment ``exp`` (its API representation) over the event store of ``core``."""
    if exp["status"] == "draft" or not exp.get("start_date"):
        raise NotLaunched(f"Experiment {exp['id']} has not been launched yet; it has no results.",
                          attr="status")
    if hasattr(core, "sync"):
        core.sync()  # every acknowledged event counts
    ctx = context(core, project)
    now = now or datetime.now(UTC)

    metrics = [(m, role) for field, role in METRIC_LISTS.items() for m in exp.get(field) or []]
    goals = list(range(min(MAX_CUMULATIVE_METRICS, len(exp.get("metrics") or [])))) if cumulative else []
    # one statement: exposures, every metric and the cumulative series of the first goals
    batch = ExperimentSQL(ctx, exp, now=now).compute([m for m, _ in metrics], goals)
    exposures = batch.exposures
    variants = exp["parameters"]["feature_flag_variants"]
    srm = stats.srm_test([exposures.counts.get(v["key"], 0) for v in variants],
                         [float(v["rollout_percentage"]) for v in variants])
    blocks = [_metric_block(exp, m, role, st) for (m, role), st in zip(metrics, batch.stats)]
    _correct(blocks, exp["stats_config"])
    rec = recommend(exp, exposures, srm, blocks)
    for b in blocks:
        for r in b["variants"]:
            r.pop("_comparison", None)
    out = {"experiment_id": exp["id"], "name": exp["name"], "feature_flag_key": exp["feature_flag_key"],
           "status": exp["status"], "start_date": exp["start_date"], "end_date": exp.get("end_date"),
           "computed_at": now.isoformat(), "stats_config": exp["stats_config"],
           "exposures": exposures.counts, "multiple_variant_persons": exposures.multiple,
           "multiple_variant_persons_by_variant": exposures.multiple_by_variant,
           "multiple_variant_handling": exposures.handling,
           "srm": {"p_value": _f(srm.p_value), "chi2": _f(srm.chi2), "mismatch": bool(srm.mismatch),
                   "expected": {v["key"]: _f(e) for v, e in zip(variants, srm.expected or [0.0] * len(variants))},
                   "warning": (f"Sample ratio mismatch: p = {srm.p_value:.2g} < 0.001; the exposures do not "
                               "match the configured split.") if srm.mismatch else None},
           "metrics": blocks, "recommendation": rec, "cumulative": []}
    for i in goals:  # the goals come first in `metrics`
        m = metrics[i][0]
        out["cumulative"].append({"uuid": m["uuid"], "name": m["name"],
                                  "days": _cumulative(exp, m, batch.cumulative[i])})
    return out


# -- the results cache ------------------------------------------------------------------------------

CACHE_TTL_SECONDS = 30.0
CACHE_ENTRIES = 64


def data_version(core) -> tuple:
    """A cheap token that changes whenever this process stores events: the writer's acknowledged
    log position and its counters of stored batches, bulk jobs and flushes. A core without a
    writer (read-only, or nothing written yet) cannot change its store itself: the TTL bounds how
    long results computed on it are reused (another process, e.g. a ClickHouse ingest node, may
    write meanwhile)."""
    writer = getattr(core, "_writer", None)
    if writer is None:
        return ("static",)
    st = writer.stats
    return (repr(getattr(writer, "_acked", None)), st.batches, st.events_stored, st.flushes, st.events_flushed)


def _fingerprint(project, exp: dict) -> str:
    """What the results depend on besides the events: the experiment's whole definition (any
    change bumps its version; the flag's state is part of it) and the project's settings."""
    doc = {"exp": exp, "tz": project.timezone, "settings": project.settings}
    return hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Entry:
    result: dict
    data: tuple
    at: float


class ResultsCache:
    """Recent results per (project, experiment, version, definition, with/without the cumulative
    series), reused while the store's :func:`data_version` is unchanged and for at most ``ttl``
    seconds. Concurrent requests for the same key compute once (the others wait for it). A
    request without the cumulative series is also answered from a cached full result."""

    def __init__(self, ttl: float = CACHE_TTL_SECONDS, entries: int = CACHE_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.entries, self.clock = ttl, entries, clock
        self._data: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self.hits = self.misses = 0

    def _fresh(self, key: tuple, version: tuple) -> _Entry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.data != version or self.clock() - entry.at >= self.ttl:
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)
        return entry

    def _answer(self, entry: _Entry, cumulative: bool) -> dict:
        self.hits += 1
        out = {**entry.result, "cached": True, "cache_age_seconds": round(self.clock() - entry.at, 3)}
        if not cumulative:
            out["cumulative"] = []
        return out

    def results(self, core, project, exp: dict, *, cumulative: bool = True, refresh: bool = False,
                now: datetime | None = None) -> dict:
        """:func:`compute`'s document, from the cache when it is fresh (``refresh`` recomputes;
        the new document replaces the cached one). ``cached`` says which it was."""
        if exp["status"] == "draft" or not exp.get("start_date"):
            return compute(core, project, exp, now=now, cumulative=cumulative)  # raises NotLaunched
        if hasattr(core, "sync"):
            core.sync()  # every acknowledged event counts (and is then part of the data version)
        base = (project.id, exp["id"], exp.get("version"), _fingerprint(project, exp))
        key = base + (cumulative,)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            version = data_version(core)
            if not refresh:
                with self._lock:
                    entry = self._fresh(key, version) or (self._fresh(base + (True,), version)
                                                          if not cumulative else None)
                if entry is not None:
                    return self._answer(entry, cumulative)
            self.misses += 1
            result = compute(core, project, exp, now=now, cumulative=cumulative)
            with self._lock:
                self._data[key] = _Entry(result, version, self.clock())
                self._data.move_to_end(key)
                while len(self._data) > self.entries:
                    old, _ = self._data.popitem(last=False)
                    self._key_locks.pop(old, None)
        return {**result, "cached": False, "cache_age_seconds": 0.0}


def cache_of(core) -> ResultsCache:
    """The results cache of a core (one per opened data directory)."""
    cache = getattr(core, "_experiment_results_cache", None)
    if cache is None:
        cache = ResultsCache()
        core._experiment_results_cache = cache
    return cache


def cached(core, project, exp: dict, *, cumulative: bool = True, refresh: bool = False) -> dict:
    return cache_of(core).results(core, project, exp, cumulative=cumulative, refresh=refresh)


def table(result: dict) -> str:
    """A readable text table of a results document (the CLI prints it)."""
    cfg = result["stats_config"]
    bayes = cfg["method"] == "bayesian"
    lines = [f"Experiment {result['experiment_id']}: {result['name']}  (flag {result['feature_flag_key']}, "
             f"{result['status']}, since {result['start_date'][:16].replace('T', ' ')})",
             "Exposures: " + ", ".join(f"{k} {v:,}" for k, v in result["exposures"].items())
             + f"; {result['multiple_variant_persons']:,} persons saw more than one variant"
             + (" (excluded)" if result["multiple_variant_handling"] == "exclude" else " (kept in their first)"),
             f"Method: {cfg['method']}" + (", sequential" if cfg.get("sequential") else "")
             + (", CUPED" if cfg.get("cuped") else "")
             + (f", capped at p{float(cfg['outlier_capping_percentile']) * 100:g}"
                if cfg.get("outlier_capping_percentile") is not None else "")
             + f", {float(cfg['confidence_level']) * 100:g}% level"]
    if result["srm"]["warning"]:
        lines.append("WARNING: " + result["srm"]["warning"])
    head = ["metric", "variant", "exposures", "value", "lift", "interval",
            "chance to win" if bayes else "p (adj.)", "significant"]
    rows = []
    for b in result["metrics"]:
        label = b["name"] + ("" if b["role"] == "goal" else f" [{b['role']}]")
        for r in b["variants"]:
            value = r["value"]
            shown = "" if value is None else (f"{value * 100:.2f}%" if b["metric_type"] == "funnel" else f"{value:.4g}")
            if r["key"] == "control":
                rows.append([label, r["key"], f"{r['exposures']:,}", shown, "", "", "", ""])
                continue
            lo, hi = r.get("lift_interval") or [None, None]
            interval = f"[{_pct(lo)}, {_pct(hi)}]" if lo is not None or hi is not None else ""
            stat = (f"{r['chance_to_win'] * 100:.1f}%" if bayes and r.get("chance_to_win") is not None else
                    f"{r['p_value_adjusted']:.3g}" if r.get("p_value_adjusted") is not None else "")
            sig = r["error"] if r.get("error") else ("yes" if r["significant"] else "no")
            rows.append(["", r["key"], f"{r['exposures']:,}", shown, _pct(r.get("lift")), interval, stat, sig])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines.append("")
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    rec = result["recommendation"]
    action = {"ship": f"SHIP {rec['variant']}", "roll_back": "ROLL BACK (keep control)",
              "keep_running": "KEEP RUNNING"}[rec["action"]]
    lines += ["", f"Recommendation: {action}", f"  {rec['reason']}"]
    return "\n".join(lines)
