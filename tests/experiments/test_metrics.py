"""The metric SQL against a plain-Python computation on a hand-made dataset: first exposure wins,
persons who saw two variants are excluded, merged persons count once, conversion windows, funnels,
counts, sums, ratios, the CUPED pre-period covariate, percentile capping and the cumulative series."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

import sightline
from sightline.experiments.metrics import ExperimentSQL
from sightline.experiments.results import context
from sightline.experiments.service import ExperimentService

UTC = timezone.utc
FLAG = "metric-flag"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = NOW - timedelta(days=4)
PRE_DAYS = 2
WINDOW_H = 30


def _dataset(seed: int = 7):
    """Events plus the truth: person index → (distinct ids, events as (ts, event, props))."""
    rnd = random.Random(seed)
    events, persons = [], []

    def at(h: float) -> datetime:
        return START + timedelta(hours=h)

    for i in range(160):
        anon, user = f"anon-{i}", f"user-{i}"
        mine = []

        def emit(ts, name, did, props=None):
            e = {"event": name, "distinct_id": did, "timestamp": ts.isoformat(), "properties": props or {}}
            events.append(e)
            mine.append((ts, name, props or {}))

        v = "control" if rnd.random() < 0.5 else "test"
        t0 = rnd.uniform(-30, 60)                 # some exposures come before the start: ignored
        flag = {"$feature_flag": FLAG, "$feature_flag_response": v}
        # pre-period activity (some of it before exposure on the user id, merged later)
        for _ in range(rnd.randint(0, 3)):
            emit(at(t0 - rnd.uniform(1, 70)), "pv", user)
        if rnd.random() < 0.2:
            emit(at(t0 - rnd.uniform(1, 40)), "purchase", user, {"amount": rnd.choice([5, 20])})
        emit(at(t0), "$feature_flag_called", anon, flag)
        if rnd.random() < 0.3:                     # repeated exposure, same variant
            emit(at(t0 + rnd.uniform(0.1, 5)), "$feature_flag_called", anon, flag)
        if rnd.random() < 0.08:                    # saw the other variant too
            other = "test" if v == "control" else "control"
            emit(at(t0 + rnd.uniform(0.1, 5)), "$feature_flag_called", anon, {**flag, "$feature_flag_response": other})
        if rnd.random() < 0.05:                    # not an experiment variant: ignored
            emit(at(t0 - 0.5), "$feature_flag_called", anon, {**flag, "$feature_flag_response": "false"})
        emit(at(t0 + 0.2), "$identify", user, {"$anon_distinct_id": anon})
        boost = 1.6 if v == "test" else 1.0
        for _ in range(rnd.randint(0, int(4 * boost))):
            emit(at(t0 + rnd.uniform(0.3, 60)), "pv", user)
        if rnd.random() < 0.35 * boost:
            emit(at(t0 + rnd.uniform(0.5, 50)), "purchase", user, {"amount": rnd.choice([10, 30, 100, 1000])})
        if rnd.random() < 0.1:
            emit(at(t0 + rnd.uniform(0.5, 50)), "purchase", user, {"amount": "n/a"})  # not a number: 0
        persons.append(mine)
    events.sort(key=lambda e: e["timestamp"])
    return events, persons


def _quantile(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def reference(persons, metric: str, *, cuped: bool, cap: float | None, cutoff: datetime | None = None,
              handling: str = "exclude") -> dict[str, dict]:
    """Per variant: n and the sums, computed from the events directly."""
    units = []
    for evs in persons:
        exps = sorted((ts, p["$feature_flag_response"]) for ts, name, p in evs if name == "$feature_flag_called"
                      and p.get("$feature_flag") == FLAG and p["$feature_flag_response"] in ("control", "test")
                      and ts >= START)
        if not exps or (cutoff and exps[0][0] > cutoff):
            continue
        if len({v for _, v in exps}) > 1 and handling == "exclude":
            continue
        t0, variant = exps[0]
        post = [(ts, n, p) for ts, n, p in evs if ts >= t0 and (cutoff is None or ts <= cutoff)]
        pre = [(ts, n, p) for ts, n, p in evs if t0 - timedelta(days=PRE_DAYS) <= ts < t0 and ts >= START - timedelta(days=PRE_DAYS)]
        win = [(ts, n, p) for ts, n, p in post if ts - t0 <= timedelta(hours=WINDOW_H)]
        if metric == "funnel":     # pv then purchase, within the window
            pvs = sorted(ts for ts, n, _ in win if n == "pv")
            x = 0.0
            if pvs:
                x = 1.0 if any(ts > pvs[0] for ts, n, _ in win if n == "purchase") else 0.0
            y, z, w = 0.0, (1.0 if any(n == "purchase" for _, n, _ in pre) else 0.0), 0.0
        elif metric == "count":    # pv per user within the window
            x, y = float(sum(1 for _, n, _ in win if n == "pv")), 0.0
            z, w = float(sum(1 for _, n, _ in pre if n == "pv")), 0.0
        elif metric == "sum":      # sum of purchase amount, no window
            x, y = sum(_num(p.get("amount")) for _, n, p in post if n == "purchase"), 0.0
            z, w = sum(_num(p.get("amount")) for _, n, p in pre if n == "purchase"), 0.0
        else:                      # ratio: purchase amount / pv count
            x = sum(_num(p.get("amount")) for _, n, p in post if n == "purchase")
            y = float(sum(1 for _, n, _ in post if n == "pv"))
            z = sum(_num(p.get("amount")) for _, n, p in pre if n == "purchase")
            w = float(sum(1 for _, n, _ in pre if n == "pv"))
        if not cuped:
            z = w = 0.0
        units.append((variant, x, y, z, w))
    if cap is not None and metric != "funnel" and units:
        caps = [_quantile([u[k] for u in units], cap) for k in range(1, 5)]
        units = [(u[0], *(min(u[k], caps[k - 1]) for k in range(1, 5))) for u in units]
    out = {}
    for v in ("control", "test"):
        rows = [u[1:] for u in units if u[0] == v]
        out[v] = {"n": len(rows), "sum": sum(r[0] for r in rows), "sum_squares": sum(r[0] ** 2 for r in rows),
                  "den_sum": sum(r[1] for r in rows), "sum_product": sum(r[0] * r[1] for r in rows),
                  "pre_sum": sum(r[2] for r in rows), "pre_sum_squares": sum(r[2] ** 2 for r in rows),
                  "pre_sum_product": sum(r[0] * r[2] for r in rows), "pre_den_sum": sum(r[3] for r in rows),
                  "den_pre_product": sum(r[1] * r[2] for r in rows)}
    return out


METRICS = {
    "funnel": {"metric_type": "funnel", "series": [{"event": "pv"}, {"event": "purchase"}],
               "conversion_window": WINDOW_H, "conversion_window_unit": "hour"},
    "count": {"metric_type": "count", "source": {"event": "pv"}, "conversion_window": WINDOW_H,
              "conversion_window_unit": "hour"},
    "sum": {"metric_type": "mean", "source": {"event": "purchase", "math": "sum", "math_property": "amount"}},
    "ratio": {"metric_type": "ratio", "numerator": {"event": "purchase", "math": "sum", "math_property": "amount"},
              "denominator": {"event": "pv"}},
}


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    events, persons = _dataset()
    core = sightline.open(tmp_path_factory.mktemp("exp") / "data")
    for i in range(0, len(events), 200):   # in time order, so identities merge as they would live
        core.ingest(events[i:i + 200])
    yield core, persons
    core.close()


def _experiment(core, *, cuped: bool, cap: float | None, handling: str = "exclude", key: str) -> dict:
    svc = ExperimentService(core.meta, core.flags)
    pid = core.project.id
    exp = svc.create(pid, {"name": key, "feature_flag_key": FLAG if key == "main" else key,
                           "metrics": list(METRICS.values()),
                           "exposure_criteria": {"multiple_variant_handling": handling},
                           "stats_config": {"cuped": cuped, "cuped_pre_period_days": PRE_DAYS,
                                            "outlier_capping_percentile": cap}}, "test")
    exp = svc.launch(pid, exp["id"], "test", start_date=START.isoformat())
    # the SQL reads the experiment's own flag key; point it at the data's flag
    return {**exp, "feature_flag_key": FLAG}


def _check(got, want, ratio: bool, cuped: bool) -> None:
    assert got.n == want["n"]
    assert got.sum == pytest.approx(want["sum"]) and got.sum_squares == pytest.approx(want["sum_squares"])
    if ratio:
        assert got.den_sum == pytest.approx(want["den_sum"]) and got.sum_product == pytest.approx(want["sum_product"])
    else:
        assert got.den_sum is None
    if cuped:
        assert got.pre_sum == pytest.approx(want["pre_sum"])
        assert got.pre_sum_squares == pytest.approx(want["pre_sum_squares"])
        assert got.pre_sum_product == pytest.approx(want["pre_sum_product"])
        if ratio:
            assert got.pre_den_sum == pytest.approx(want["pre_den_sum"])
            assert got.den_pre_product == pytest.approx(want["den_pre_product"])
    else:
        assert got.pre_sum is None


@pytest.mark.parametrize("cuped,cap", [(False, None), (True, None), (True, 0.9)])
def test_metric_statistics_match_a_plain_computation(db, cuped, cap):
    core, persons = db
    exp = _experiment(core, cuped=cuped, cap=cap, key=f"k-{int(cuped)}-{cap or 0}".replace(".", "_"))
    ctx = context(core, core.project)
    exposures = ExperimentSQL(ctx, exp).exposures()
    truth = reference(persons, "count", cuped=False, cap=None)
    assert exposures.counts == {v: truth[v]["n"] for v in ("control", "test")}
    assert exposures.multiple > 0     # the dataset has persons who saw both variants
    for name, metric in zip(METRICS, exp["metrics"]):
        got = ExperimentSQL(ctx, exp).metric_stats(metric)
        want = reference(persons, name, cuped=cuped, cap=cap)
        for v in ("control", "test"):
            _check(got[v], want[v], name == "ratio", cuped)
        assert got["control"].binomial is (name == "funnel")


def test_first_seen_keeps_multi_variant_persons_in_their_first_variant(db):
    core, persons = db
    exp = _experiment(core, cuped=False, cap=None, handling="first_seen", key="first-seen")
    ctx = context(core, core.project)
    exposures = ExperimentSQL(ctx, exp).exposures()
    want = reference(persons, "sum", cuped=False, cap=None, handling="first_seen")
    assert exposures.counts == {v: want[v]["n"] for v in ("control", "test")}
    got = ExperimentSQL(ctx, exp).metric_stats(exp["metrics"][2])
    assert {v: got[v].sum for v in got} == pytest.approx({v: want[v]["sum"] for v in want})


def test_cumulative_series_matches_the_data_as_of_each_day(db):
    core, persons = db
    exp = _experiment(core, cuped=False, cap=None, key="cumulative")
    ctx = context(core, core.project)
    metric = exp["metrics"][2]   # sum of amount
    series = ExperimentSQL(ctx, exp, now=NOW).cumulative(metric)
    assert series[0][0] == START.date() and series[-1][0] == NOW.date()
    for day, stats in series:
        end_of_day = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) - timedelta(microseconds=1)
        want = reference(persons, "sum", cuped=False, cap=None, cutoff=end_of_day)
        for v in ("control", "test"):
            assert stats[v].n == want[v]["n"], day
            assert stats[v].sum == pytest.approx(want[v]["sum"]), day
            assert stats[v].sum_squares == pytest.approx(want[v]["sum_squares"]), day
