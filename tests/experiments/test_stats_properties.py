"""Properties of the statistics engine, independent cross-checks (scipy, raw-data numpy, quadrature) and
seeded simulations (null p-values are uniform, power matches the rejection rate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as sps

from sightline.experiments.stats import (
    MetricStats,
    StatsSettings,
    bayesian,
    benjamini_hochberg,
    cap,
    chance_to_win_from_ci,
    compare,
    compare_stratified,
    estimate_effect,
    holm,
    metric_mean_variance,
    minimum_detectable_effect,
    power,
    running_time,
    sample_size,
    sequential,
    srm_test,
    winsorize_threshold,
)

FREQ = StatsSettings(method="frequentist")
FREQ_ABS = StatsSettings(method="frequentist", relative=False)
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stats_of(x, y=None, z=None, w=None, binomial=False) -> MetricStats:
    """Sufficient statistics of raw per-unit arrays (x metric, y denominator, z pre-metric, w pre-denominator)."""
    x = np.asarray(x, float)
    kw: dict = {}
    if y is not None:
        y = np.asarray(y, float)
        kw.update(den_sum=y.sum(), den_sum_squares=(y * y).sum(), sum_product=(x * y).sum())
    if z is not None:
        z = np.asarray(z, float)
        kw.update(pre_sum=z.sum(), pre_sum_squares=(z * z).sum(), pre_sum_product=(x * z).sum())
    if w is not None:
        w = np.asarray(w, float)
        kw.update(
            pre_den_sum=w.sum(),
            pre_den_sum_squares=(w * w).sum(),
            main_pre_den_product=(x * w).sum(),
            den_pre_product=(y * z).sum(),
            den_pre_den_product=(y * w).sum(),
            pre_pre_den_product=(z * w).sum(),
        )
    return MetricStats(len(x), float(x.sum()), float((x * x).sum()), binomial=binomial, **kw)


def from_moments(n: int, m: float, sd: float) -> MetricStats:
    return MetricStats(n, n * m, (n - 1) * sd * sd + n * m * m)


arm = st.tuples(
    st.integers(5, 5000),
    st.floats(0.5, 100),
    st.floats(0.1, 50),
)


# --- cross-checks against scipy / raw data -------------------------------------------------------------


@HYP
@given(a=arm, b=arm)
def test_welch_absolute_matches_scipy(a, b):
    ca, cb = from_moments(*a), from_moments(*b)
    r = compare(ca, cb, FREQ_ABS)
    ref = sps.ttest_ind_from_stats(b[1], b[2], b[0], a[1], a[2], a[0], equal_var=False)
    assert r.lift_abs / r.std_error == pytest.approx(ref.statistic, rel=1e-6)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)
    # CI = Δ ± t_{.975,ν}·SE with the Welch–Satterthwaite ν
    va, vb = a[2] ** 2 / a[0], b[2] ** 2 / b[0]
    nu = (va + vb) ** 2 / (va**2 / (a[0] - 1) + vb**2 / (b[0] - 1))
    h = sps.t.ppf(0.975, nu) * math.sqrt(va + vb)
    assert r.ci_abs == pytest.approx((r.lift_abs - h, r.lift_abs + h), rel=1e-6, abs=1e-9)


def test_ratio_delta_method_matches_linearisation():
    rng = np.random.default_rng(7)
    arms = []
    for scale in (1.0, 1.15):
        y = rng.poisson(3, 4000) + 1.0  # sessions per user
        x = rng.poisson(scale * 2 * y).astype(float)  # events per user
        arms.append((x, y))
    r = compare(stats_of(*arms[0][:1], y=arms[0][1]), stats_of(arms[1][0], y=arms[1][1]), FREQ_ABS)
    se2 = 0.0
    means = []
    for x, y in arms:
        ratio = x.sum() / y.sum()
        u = (x - ratio * y) / y.mean()  # influence function of Σx/Σy
        se2 += u.var(ddof=1) / len(x)
        means.append(ratio)
    assert r.control_mean == pytest.approx(means[0])
    assert r.lift_abs == pytest.approx(means[1] - means[0])
    assert r.std_error == pytest.approx(math.sqrt(se2), rel=1e-9)


def test_cuped_mean_matches_raw_data_regression():
    rng = np.random.default_rng(11)
    data = []
    for shift in (0.0, 0.3):
        z = rng.gamma(2.0, 2.0, 3000)
        x = 0.8 * z + rng.normal(shift, 1.0, 3000)
        data.append((x, z))
    ca, cb = stats_of(data[0][0], z=data[0][1]), stats_of(data[1][0], z=data[1][1])
    e = estimate_effect(ca, cb, StatsSettings(cuped=True))
    xs = np.concatenate([d[0] for d in data])
    zs = np.concatenate([d[1] for d in data])
    theta = np.cov(xs, zs, ddof=1)[0, 1] / zs.var(ddof=1)
    assert e.cuped_applied and e.theta == pytest.approx(theta, rel=1e-9)
    adj = [x - theta * z for x, z in data]
    assert e.lift_abs == pytest.approx(adj[1].mean() - adj[0].mean(), rel=1e-9)
    assert e.var_abs == pytest.approx(sum(a.var(ddof=1) / len(a) for a in adj), rel=1e-9)
    plain = estimate_effect(ca, cb, StatsSettings())
    assert e.var_abs < 0.5 * plain.var_abs  # the covariate explains most of the variance
    # relative: δ = (μ̃_B − μ̃_A)/|ȳ_A|, variance by the delta method on (ȳ_A, x̄_A, μ̃_B)
    assert e.lift_rel == pytest.approx(e.lift_abs / data[0][0].mean(), rel=1e-9)


def _cuped_ratio_data(seed: int):
    rng = np.random.default_rng(seed)
    arms = []
    for lift in (1.0, 1.1):
        w = rng.poisson(3, 2500) + 1.0
        z = rng.poisson(2 * w).astype(float)
        y = np.maximum(w + rng.poisson(1, 2500) - 1, 1.0)
        x = rng.poisson(lift * (z / w) * y + 0.2).astype(float)
        arms.append((x, y, z, w))
    return arms


def test_cuped_ratio_variance_matches_numerical_gradient():
    arms = _cuped_ratio_data(3)
    ca, cb = (stats_of(*a) for a in arms)
    e = estimate_effect(ca, cb, StatsSettings(cuped=True))
    assert e.cuped_applied and e.theta is not None
    theta = e.theta

    def lifts(b: np.ndarray) -> tuple[float, float]:  # b = 4 means of A then 4 means of B
        mu = [b[k] / b[k + 1] - theta * b[k + 2] / b[k + 3] for k in (0, 4)]
        ya = b[0] / b[1]
        return mu[1] - mu[0], (mu[1] - mu[0]) / abs(ya)

    beta = np.concatenate([np.array([a.mean() for a in arm]) for arm in arms])
    cov = np.zeros((8, 8))
    for k, arm in enumerate(arms):
        cov[4 * k : 4 * k + 4, 4 * k : 4 * k + 4] = np.cov(np.vstack(arm), ddof=1) / len(arm[0])
    grads = np.zeros((2, 8))
    for i in range(8):
        h = 1e-6 * max(1.0, abs(beta[i]))
        up, dn = beta.copy(), beta.copy()
        up[i] += h
        dn[i] -= h
        grads[:, i] = (np.array(lifts(up)) - np.array(lifts(dn))) / (2 * h)
    assert e.lift_abs == pytest.approx(lifts(beta)[0], rel=1e-9)
    assert e.lift_rel == pytest.approx(lifts(beta)[1], rel=1e-9)
    assert e.var_abs == pytest.approx(grads[0] @ cov @ grads[0], rel=1e-5)
    assert e.var_rel == pytest.approx(grads[1] @ cov @ grads[1], rel=1e-5)
    plain = estimate_effect(ca, cb, StatsSettings())
    assert e.var_rel < plain.var_rel


def test_cuped_ratio_with_unit_denominators_is_residual_variance():
    rng = np.random.default_rng(5)
    arms = []
    for shift in (0.0, 0.2):
        z = rng.normal(5, 2, 2000)
        x = 0.6 * z + rng.normal(shift, 1, 2000)
        one = np.ones(2000)
        arms.append((x, one, z, one))
    e = estimate_effect(stats_of(*arms[0]), stats_of(*arms[1]), StatsSettings(cuped=True))
    res = [x - e.theta * z for x, _, z, _ in arms]
    assert e.lift_abs == pytest.approx(res[1].mean() - res[0].mean(), rel=1e-9)
    assert e.var_abs == pytest.approx(sum(r.var(ddof=1) / len(r) for r in res), rel=1e-9)
    # θ = Σcov/Σvar over arms (per-arm pooled), close to the regression slope 0.6
    assert e.theta == pytest.approx(0.6, abs=0.05)


def test_cuped_without_informative_covariate_falls_back():
    a = MetricStats(100, 50, 80, pre_sum=100, pre_sum_squares=100, pre_sum_product=50)  # z ≡ 1
    b = MetricStats(100, 60, 90, pre_sum=100, pre_sum_squares=100, pre_sum_product=60)
    r = compare(a, b, StatsSettings(method="frequentist", cuped=True))
    assert not r.cuped_applied
    assert r.lift_rel == compare(a, b, FREQ).lift_rel


def test_additivity_of_rows():
    rng = np.random.default_rng(1)
    x, y, z = rng.normal(size=(3, 300))
    whole = stats_of(x, y=y, z=z)
    parts = stats_of(x[:100], y=y[:100], z=z[:100]) + stats_of(x[100:], y=y[100:], z=z[100:])
    for f in ("n", "sum", "sum_squares", "den_sum", "den_sum_squares", "sum_product", "pre_sum", "pre_sum_product"):
        assert getattr(parts, f) == pytest.approx(getattr(whole, f))


@HYP
@given(mu=st.floats(-3, 3), s=st.floats(0.01, 2))
def test_risk_and_chance_to_win_match_quadrature(mu, s):
    pdf = sps.norm(mu, s).pdf
    lo, hi = mu - 12 * s, mu + 12 * s
    e_pos = integrate.quad(lambda d: d * pdf(d), 0, max(hi, 0), limit=200)[0] if hi > 0 else 0.0
    e_neg = integrate.quad(lambda d: -d * pdf(d), min(lo, 0), 0, limit=200)[0] if lo < 0 else 0.0
    rc, rt = bayesian.risk(mu, s)
    assert rc == pytest.approx(e_pos, abs=1e-8)
    assert rt == pytest.approx(e_neg, abs=1e-8)
    assert bayesian.risk(mu, s, inverse=True) == (rt, rc)
    assert bayesian.chance_to_win(mu, s) == pytest.approx(1 - sps.norm.cdf(0, mu, s), abs=1e-12)


def test_srm_matches_scipy_chisquare():
    obs = [1040, 980, 1990]
    w = [0.25, 0.25, 0.5]
    exp = [sum(obs) * x for x in w]
    ref = sps.chisquare(obs, exp)
    r = srm_test(obs, w)
    assert r.chi2 == pytest.approx(ref.statistic)
    assert r.p_value == pytest.approx(ref.pvalue)
    assert r.df == 2 and r.expected == pytest.approx(tuple(exp))
    with pytest.raises(ValueError):
        srm_test([1, 2], [0.5])


def test_winsorize_threshold_plain_percentile():
    vals = [0, 0, 0, 1, 2, 3, 4, 100]

    def pct(v, q):  # linear interpolation between closest ranks
        v = sorted(v)
        pos = q * (len(v) - 1)
        lo = math.floor(pos)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)

    assert winsorize_threshold(vals, 0.9) == pytest.approx(pct(vals, 0.9))
    assert winsorize_threshold(vals, 0.5, ignore_zeros=True) == pytest.approx(pct([1, 2, 3, 4, 100], 0.5))
    assert cap(vals, 4) == [0, 0, 0, 1, 2, 3, 4, 4]
    with pytest.raises(ValueError):
        winsorize_threshold(vals, 1.0)


# --- structural properties ---------------------------------------------------------------------------


@HYP
@given(a=arm, b=arm, k=st.integers(2, 20), method=st.sampled_from(["frequentist", "bayesian", "sequential"]))
def test_intervals_shrink_as_n_grows(a, b, k, method):
    s = StatsSettings(method="bayesian" if method == "bayesian" else "frequentist", sequential=method == "sequential")
    ca, cb = from_moments(*a), from_moments(*b)
    big = compare(
        MetricStats(ca.n * k, ca.sum * k, ca.sum_squares * k), MetricStats(cb.n * k, cb.sum * k, cb.sum_squares * k), s
    )
    small = compare(ca, cb, s)
    assert big.lift_rel == pytest.approx(small.lift_rel)
    for scale in ("ci_abs", "ci_rel"):
        w_small = getattr(small, scale)[1] - getattr(small, scale)[0]
        w_big = getattr(big, scale)[1] - getattr(big, scale)[0]
        assert w_big < w_small


@HYP
@given(a=arm, b=arm, method=st.sampled_from(["frequentist", "bayesian", "sequential"]))
def test_swapping_arms_flips_the_absolute_effect(a, b, method):
    s = StatsSettings(
        method="bayesian" if method == "bayesian" else "frequentist",
        sequential=method == "sequential",
        relative=False,
    )
    ca, cb = from_moments(*a), from_moments(*b)
    ab, ba = compare(ca, cb, s), compare(cb, ca, s)
    assert ba.lift_abs == pytest.approx(-ab.lift_abs, abs=1e-9)
    assert ba.std_error == pytest.approx(ab.std_error)
    assert ba.ci_abs[0] == pytest.approx(-ab.ci_abs[1], abs=1e-9)
    assert ba.ci_abs[1] == pytest.approx(-ab.ci_abs[0], abs=1e-9)
    assert ba.significant == ab.significant or abs(ab.lift_abs) < 1e-9
    if s.method == "frequentist":
        assert ba.p_value == pytest.approx(ab.p_value, abs=1e-12)
    else:
        assert ba.chance_to_win == pytest.approx(1 - ab.chance_to_win, abs=1e-12)
        assert ba.risk == pytest.approx(ab.risk[::-1], abs=1e-12)


@HYP
@given(
    est=st.floats(-2, 2), se=st.floats(0.01, 1), n=st.integers(10, 10**6), tuning=st.sampled_from([100, 5000, 1e5])
)
def test_sequential_p_value_and_interval_agree(est, se, n, tuning):
    p, (lo, hi) = sequential.sequential_test(est, se, n, 0.05, tuning)
    excludes_zero = lo > 0 or hi < 0
    if abs(abs(est) - (hi - lo) / 2) > 1e-9:
        assert (p < 0.05) == excludes_zero
    # always-valid intervals are wider than the fixed-horizon normal interval
    assert (hi - lo) / 2 > sps.norm.ppf(0.975) * se


@HYP
@given(est=st.floats(0.05, 1), se=st.floats(0.05, 0.5), n=st.integers(100, 10**5))
def test_one_sided_sequential_p_is_where_the_bound_crosses_zero(est, se, n):
    p = sequential.p_value_one_sided(est, se, n, 5000, "greater")
    r = sequential.rho(0.05, 5000, two_sided=False)
    bound = est - sequential.halfwidth(se, n, p, 5000, two_sided=False, rho_value=r)
    if 1e-5 < p < 0.4999:
        assert abs(bound) < 1e-3 * max(1.0, est)
    elif p == 1e-5:
        assert bound > 0
    else:
        assert bound <= 0
    assert sequential.p_value_one_sided(-est, se, n, 5000, "less") == pytest.approx(p)


def test_smaller_tuning_gives_wider_intervals_at_large_n():
    a, b = MetricStats(3000, 1396.87, 52377.9767), MetricStats(3461, 2422.7, 134698.29)
    widths = []
    for tuning in (1000, 5000):
        r = compare(a, b, StatsSettings(method="frequentist", sequential=True, sequential_tuning=tuning))
        widths.append(r.ci_rel[1] - r.ci_rel[0])
    assert widths[0] > widths[1]


def test_one_sided_t_test():
    a, b = MetricStats(3407, 1396.87, 52377.9767), MetricStats(3461, 2422.7, 134698.29)
    two = compare(a, b, FREQ)
    g = compare(a, b, StatsSettings(method="frequentist", alternative="greater"))
    le = compare(a, b, StatsSettings(method="frequentist", alternative="less"))
    assert g.p_value == pytest.approx(two.p_value / 2)
    assert le.p_value == pytest.approx(1 - two.p_value / 2)
    assert g.ci_rel[1] == math.inf and g.ci_rel[0] > two.ci_rel[0]
    assert le.ci_rel[0] == -math.inf and le.ci_rel[1] < two.ci_rel[1]


def test_inverse_metric_bayesian():
    a, b = MetricStats(100, 49, 49, binomial=True), MetricStats(100, 51, 51, binomial=True)
    r = compare(a, b)
    inv = compare(a, b, StatsSettings(inverse=True))
    assert inv.chance_to_win == pytest.approx(1 - r.chance_to_win)
    assert inv.risk == pytest.approx(r.risk[::-1])


@HYP
@given(ps=st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_corrections_properties(ps):
    h, bh = holm(ps), benjamini_hochberg(ps)
    for raw, ph, pb in zip(ps, h, bh):
        assert raw - 1e-15 <= pb <= ph + 1e-15 <= 1 + 1e-15  # BH never stricter than Holm
    for i in range(len(ps)):
        for j in range(len(ps)):
            if ps[i] < ps[j]:
                assert h[i] <= h[j] and bh[i] <= bh[j]
    if len(ps) == 1:
        assert h == ps and bh == ps


def test_unanalysable_data_claims_nothing():
    ok = MetricStats(100, 50, 80)
    cases = {
        "not_enough_data": (MetricStats(1, 1, 1), ok),
        "zero_variance": (MetricStats(100, 100, 100), ok),
        "zero_baseline": (MetricStats(100, 0, 50), ok),  # values of both signs averaging 0
    }
    for code, (a, b) in cases.items():
        f = compare(a, b, FREQ)
        assert f.error == code and f.p_value == 1.0 and not f.significant and f.ci_rel == (0.0, 0.0)
        bz = compare(a, b)
        assert bz.error == code and bz.chance_to_win == 0.5 and bz.risk == (0.0, 0.0)
    assert compare(ok, ok, FREQ).error is None
    for bad in (
        StatsSettings(method="magic"),
        StatsSettings(alternative="sideways"),
        StatsSettings(confidence_level=1.5),
        StatsSettings(proper_prior=True, prior_stddev=0),
    ):
        with pytest.raises(ValueError):
            compare(ok, ok, bad)
    with pytest.raises(ValueError):
        compare(ok, MetricStats(100, 50, 80, den_sum=100, den_sum_squares=100, sum_product=50))


# --- seeded simulations ------------------------------------------------------------------------------


def _null_arms(rng, sims: int, n: int):
    x = rng.lognormal(0, 0.5, size=(sims, 2, n))
    return x.sum(axis=2), (x * x).sum(axis=2)


def test_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(2024)
    sims, n = 2000, 100
    s, q = _null_arms(rng, sims, n)
    p_rel, p_abs, ctw, seq_rejections = [], [], [], 0
    seq = StatsSettings(method="frequentist", sequential=True)
    for i in range(sims):
        a, b = MetricStats(n, s[i, 0], q[i, 0]), MetricStats(n, s[i, 1], q[i, 1])
        p_rel.append(compare(a, b, FREQ).p_value)
        p_abs.append(compare(a, b, FREQ_ABS).p_value)
        ctw.append(compare(a, b).chance_to_win)
        seq_rejections += compare(a, b, seq).significant
    for sample in (p_rel, p_abs, ctw):
        assert sps.kstest(sample, "uniform").pvalue > 0.001
    assert np.mean(np.array(p_abs) < 0.05) == pytest.approx(0.05, abs=0.015)
    assert seq_rejections / sims < 0.05  # always-valid: conservative at a single look


def test_power_matches_simulated_rejection_rate():
    rng = np.random.default_rng(99)
    p0, mde, n, sims = 0.1, 0.15, 4000, 1500
    predicted = power(mde, p0, p0 * (1 - p0), n, FREQ)
    assert 0.5 < predicted < 0.9
    ca = rng.binomial(n, p0, sims)
    cb = rng.binomial(n, p0 * (1 + mde), sims)
    hits = sum(
        compare(MetricStats(n, a, a, binomial=True), MetricStats(n, b, b, binomial=True), FREQ).significant
        for a, b in zip(ca, cb)
    )
    rate = hits / sims
    assert abs(rate - predicted) < 4 * math.sqrt(predicted * (1 - predicted) / sims)


def test_power_mde_sample_size_running_time_are_consistent():
    mean, var = 0.1, 0.09
    for s in (FREQ, StatsSettings(method="frequentist", sequential=True), StatsSettings()):
        mde = minimum_detectable_effect(mean, var, 5000, 0.8, s)
        assert mde is not None and 0 < mde < 1
        assert 0.8 <= power(mde, mean, var, 5000, s) < 0.8 + 1e-3  # closed form ignores the far tail
        n = sample_size(0.1, mean, var, 0.8, s)
        assert power(0.1, mean, var, n, s) >= 0.8 > power(0.1, mean, var, n - 1, s)
        weeks = running_time(0.1, mean, var, weekly_users=2000, variants=2, settings=s)
        assert weeks is not None
        assert round(power(0.1, mean, var, weeks * 1000, s), 2) >= 0.8
        assert round(power(0.1, mean, var, (weeks - 1) * 1000, s), 2) < 0.8 if weeks > 1 else True
    # a flat Bayesian prior plans like the frequentist test; sequential needs more users
    assert power(0.1, mean, var, 3000, StatsSettings()) == pytest.approx(power(0.1, mean, var, 3000, FREQ))
    seq = StatsSettings(method="frequentist", sequential=True)
    assert sample_size(0.1, mean, var, 0.8, seq) > sample_size(0.1, mean, var, 0.8, FREQ)
    assert minimum_detectable_effect(mean, var, 10, 0.8, FREQ) is None  # n ≤ σ²z²/μ²
    assert running_time(0.001, mean, var, weekly_users=100, max_weeks=5) is None


def test_power_textbook_two_proportions():
    # normal approximation: n = (z_.975 + z_.8)² · (σ²_A + σ²_B) / Δ² per arm for an absolute difference,
    # which equals our relative formula when σ²_B is taken at the control's variance
    mean, var, mde = 0.2, 0.16, 0.1
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    v_rel = var / mean**2 + var * (mean * (1 + mde)) ** 2 / mean**4
    n_expected = math.ceil(z * z * v_rel / mde**2)
    assert abs(sample_size(mde, mean, var, 0.8, FREQ) - n_expected) <= 1


def test_bayesian_proper_prior_mde_grid():
    s = StatsSettings(proper_prior=True, prior_mean=0.0, prior_stddev=0.1)
    mde = minimum_detectable_effect(0.1, 0.09, 5000, 0.8, s)
    flat = minimum_detectable_effect(0.1, 0.09, 5000, 0.8, FREQ)
    assert mde is not None and mde > flat  # shrinkage towards 0 costs power
    assert power(mde, 0.1, 0.09, 5000, s) >= 0.8 > power(mde - 1e-5, 0.1, 0.09, 5000, s)


def test_metric_mean_variance_for_planning():
    assert metric_mean_variance(MetricStats(100, 10, 10, binomial=True)) == pytest.approx((0.1, 0.09))
    m, v = metric_mean_variance(from_moments(50, 3.0, 2.0))
    assert (m, v) == pytest.approx((3.0, 4.0))


# --- post-stratification -----------------------------------------------------------------------------


def test_post_stratification_single_stratum_is_the_ordinary_test():
    a, b = MetricStats(1000, 300, 500), MetricStats(1000, 330, 560)
    r = compare_stratified([(a, b)], FREQ)
    assert not r.post_stratified
    assert r == compare(a, b, FREQ)


def test_post_stratification_balanced_allocation_keeps_the_estimate():
    strata = [
        (MetricStats(400, 40, 60), MetricStats(400, 50, 80)),
        (MetricStats(600, 300, 500), MetricStats(600, 330, 560)),
    ]
    r = compare_stratified(strata, FREQ_ABS)
    plain = compare(strata[0][0] + strata[1][0], strata[0][1] + strata[1][1], FREQ_ABS)
    assert r.post_stratified
    assert r.lift_abs == pytest.approx(plain.lift_abs)
    assert r.std_error < plain.std_error  # strata explain part of the variance


def test_post_stratification_merges_cells_that_cannot_stand_alone():
    strata = [
        (MetricStats(1, 1, 1), MetricStats(3, 1, 1)),  # one control unit
        (MetricStats(500, 100, 150), MetricStats(480, 110, 170)),
        (MetricStats(500, 200, 350), MetricStats(520, 220, 390)),
    ]
    r = compare_stratified(strata, FREQ)
    assert r.post_stratified and r.error is None and math.isfinite(r.std_error)
    only_two = compare_stratified(strata[1:], FREQ)
    assert r.lift_rel != pytest.approx(only_two.lift_rel, abs=1e-12)  # the tiny cell was merged, not dropped


def test_post_stratified_standard_error_matches_simulation():
    rng = np.random.default_rng(31)
    sims, weights, means, n = 600, np.array([0.2, 0.5, 0.3]), np.array([1.0, 5.0, 12.0]), 1500
    est, se, plain_se = [], [], []
    for _ in range(sims):
        strata = []
        k_a = rng.choice(3, n, p=weights)
        k_b = rng.choice(3, n, p=weights)
        for k in range(3):
            xa = rng.normal(means[k], 2.0, (k_a == k).sum())
            xb = rng.normal(means[k] * 1.05, 2.0, (k_b == k).sum())
            strata.append((stats_of(xa), stats_of(xb)))
        r = compare_stratified(strata, FREQ_ABS)
        est.append(r.lift_abs)
        se.append(r.std_error)
        pooled = compare(sum((s[0] for s in strata[1:]), strata[0][0]), sum((s[1] for s in strata[1:]), strata[0][1]), FREQ_ABS)
        plain_se.append(pooled.std_error)
    true = float(weights @ means) * 0.05
    assert np.mean(est) == pytest.approx(true, abs=4 * np.std(est) / math.sqrt(sims))
    assert np.mean(se) == pytest.approx(np.std(est, ddof=1), rel=0.1)
    assert np.mean(se) < 0.6 * np.mean(plain_se)


def test_chance_to_win_from_ci_inverts_a_normal_interval():
    est, se = 0.03, 0.02
    z = sps.norm.ppf(0.975)
    ctw = chance_to_win_from_ci(est, (est - z * se, est + z * se), 0.05)
    assert ctw == pytest.approx(sps.norm.cdf(est / se))
    one = chance_to_win_from_ci(est, (est - sps.norm.ppf(0.95) * se, math.inf), 0.05)
    assert one == pytest.approx(ctw)
    assert chance_to_win_from_ci(est, (est - z * se, est + z * se), 0.05, inverse=True) == pytest.approx(1 - ctw)
