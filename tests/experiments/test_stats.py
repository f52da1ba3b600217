"""Reference vectors of the statistics spec (/work/shared/specs/statistics.md §6), pinned to 5 dp."""

from __future__ import annotations

import math

import pytest

from sightline.experiments.stats import (
    MetricStats,
    StatsSettings,
    adjusted_ci,
    benjamini_hochberg,
    compare,
    holm,
    srm_test,
)
from sightline.experiments.stats.bayesian import risk

FREQ = StatsSettings(method="frequentist")
BAYES = StatsSettings(method="bayesian")
A1 = MetricStats(3407, 1396.87, 52377.9767)
B1 = MetricStats(3461, 2422.7, 134698.29)


def approx(x: float, places: int = 5):
    """Agreement to ``places`` decimals: |actual − expected| ≤ 10^−places (spec values may be truncated)."""
    return pytest.approx(x, abs=10**-places)


def assert_pair(actual: tuple[float, float], expected: tuple[float, float], places: int = 5) -> None:
    assert actual[0] == approx(expected[0], places)
    assert actual[1] == approx(expected[1], places)


def binom(n: int, s: int) -> MetricStats:
    return MetricStats(n, s, s, binomial=True)


def test_1_welch_relative_and_absolute():
    r = compare(A1, B1, FREQ)
    assert r.lift_rel == approx(0.70732)
    assert r.std_error == approx(0.37879)
    assert_pair(r.ci_rel, (-0.03526, 1.44989))
    assert r.p_value == approx(0.06191)
    assert not r.significant
    a = compare(A1, B1, StatsSettings(method="frequentist", relative=False))
    assert a.lift_abs == approx(0.29)
    assert a.std_error == approx(0.12478)
    assert_pair(a.ci_abs, (0.04538, 0.53462))
    assert a.p_value == approx(0.02016)
    assert a.significant


def test_2_welch_binomial():
    r = compare(binom(28, 14), binom(30, 16), FREQ)
    assert r.lift_rel == approx(0.06667)
    assert r.std_error == approx(0.2717)
    assert_pair(r.ci_rel, (-0.47767, 0.61101))
    assert r.p_value == approx(0.80707)


def test_4_sequential_tuning_1000():
    s = StatsSettings(method="frequentist", sequential=True, sequential_tuning=1000)
    r = compare(MetricStats(3000, 1396.87, 52377.9767), B1, s)
    assert_pair(r.ci_rel, (-0.55844, 1.56516))
    assert r.p_value == approx(1.0)
    assert not r.significant


def test_5_sequential_binomial():
    s = StatsSettings(method="frequentist", sequential=True, sequential_tuning=5000)
    r = compare(binom(3000, 1396), binom(3461, 2422), s)
    assert r.lift_rel == approx(0.50386)
    assert r.std_error == approx(0.03386)
    assert_pair(r.ci_rel, (0.40098, 0.60675))
    assert r.p_value == approx(0.0)
    assert r.significant


def test_7_bayesian_binomial():
    r = compare(binom(100, 49), binom(100, 51), BAYES)
    assert r.expected == approx(0.04082)
    assert r.std_error == approx(0.14725)
    assert_pair(r.ci_rel, (-0.24779, 0.32943))
    assert r.chance_to_win == approx(0.60918)
    assert_pair(r.risk, (0.0814, 0.04058))
    assert r.p_value is None and not r.significant


A8 = MetricStats(10, 100, 1002.25)
B8 = MetricStats(10, 105, 1111.5)


def test_8_bayesian_normal_flat_prior():
    r = compare(A8, B8, BAYES)
    assert r.expected == approx(0.05)
    assert r.std_error == approx(0.03572)
    assert_pair(r.ci_rel, (-0.02, 0.12))
    assert r.chance_to_win == approx(0.91923)
    assert_pair(r.risk, (0.05131, 0.00131))


def test_8_bayesian_normal_proper_prior():
    s = StatsSettings(method="bayesian", proper_prior=True, prior_mean=0.1, prior_stddev=math.sqrt(0.1))
    r = compare(A8, B8, s)
    assert r.expected == approx(0.05063)
    assert r.std_error == approx(0.03549)
    assert_pair(r.ci_rel, (-0.01893, 0.12019))
    assert r.chance_to_win == approx(0.92315)
    assert_pair(r.risk, (0.05186, 0.00123))
    # the raw (likelihood) estimate is still reported as the lift
    assert r.lift_rel == approx(0.05)


def test_9_risk():
    assert_pair(risk(0.1, 0.05), (0.1004245351308, 0.0004245351308414), places=10)


A12 = MetricStats(3001, 300, 600, pre_sum=210, pre_sum_squares=415, pre_sum_product=-20)
B12 = MetricStats(3000, 222, 555, pre_sum=120, pre_sum_squares=405, pre_sum_product=-10)


def test_12_cuped_count():
    r = compare(A12, B12, StatsSettings(method="frequentist", cuped=True))
    assert r.cuped_applied
    assert r.theta == approx(-0.0732119, 7)
    assert r.lift_rel == approx(-0.281707154, 9)
    assert r.p_value == approx(0.003732549, 9)
    plain = compare(A12, B12, FREQ)
    assert not plain.cuped_applied and plain.theta is None
    assert plain.lift_rel != approx(r.lift_rel)


def test_12_cuped_binomial():
    a = MetricStats(3001, 300, 300, pre_sum=210, pre_sum_product=-20, binomial=True)
    b = MetricStats(3000, 222, 222, pre_sum=120, pre_sum_product=-10, binomial=True)
    r = compare(a, b, StatsSettings(method="frequentist", cuped=True))
    assert r.cuped_applied
    assert r.lift_rel == approx(-0.31620216, 8)
    assert r.p_value == approx(0.000000353, 9)


@pytest.mark.parametrize(
    "observed,weights,expected",
    [
        ([1000, 1200], [0.5, 0.5], 0.000020079),
        ([135, 115], [0.5, 0.5], 0.205903211),
        ([310, 98], [0.75, 0.25], 0.647434186),
        ([0, 10, 10], [0.34, 0.33, 0.33], 0.005790624),
        ([500, 500, 600], [0.34, 0.33, 0.33], 0.000592638),
        ([500, 500], [0.5, 0.5], 1.0),
        # TS semantics: a weight-0 arm leaves Σo and the degrees of freedom
        ([1000, 1200, 900], [0.5, 0.5, 0.0], 0.000020079),
        ([0, 0], [0.5, 0.5], 1.0),
    ],
)
def test_16_srm(observed, weights, expected):
    r = srm_test(observed, weights)
    assert r.p_value == approx(expected, 9)
    assert r.mismatch == (expected < 0.001)


def test_17_corrections():
    holm_out = holm([0.01, 0.04, 0.03, 0.005, 0.55, 0.6])
    assert holm_out == pytest.approx([0.05, 0.12, 0.12, 0.03, 1, 1], abs=1e-9)
    bh = benjamini_hochberg([0.898, 0.138, 0.007, 0.964, 0.538, 0.006, 0.138])
    assert bh == pytest.approx([0.964, 0.2415, 0.0245, 0.964, 0.7532, 0.0245, 0.2415], abs=1e-9)
    assert holm([0.025, 0.03]) == pytest.approx([0.05, 0.05], abs=1e-12)
    assert benjamini_hochberg([0.025, 0.03]) == pytest.approx([0.03, 0.03], abs=1e-12)
    assert_pair(adjusted_ci(0.1, 0.049999999, 0.05), (0.0, 0.2), places=8)
    assert adjusted_ci(0.1, 0.9999995) == (-math.inf, math.inf)


T20 = MetricStats(2461, 1922.7, 94698.29)
C20 = MetricStats(2507, 1196.87, 37377.9767)


def test_20_posthog_frequentist():
    r = compare(C20, T20, FREQ)
    assert r.lift_rel == approx(0.63646)
    # PostHog prints 4 dp where it shows 4 digits (its tests use places=4)
    assert r.ci_rel[0] == approx(-0.0875, 4)
    assert r.ci_rel[1] == approx(1.36048)
    assert r.p_value == approx(0.08487)


def test_21_posthog_frequentist_binomial():
    r = compare(binom(1529, 87), binom(1471, 62), FREQ)
    assert r.lift_rel == approx(-0.25925)
    assert_pair(r.ci_rel, (-0.49475, -0.02376))
    assert r.p_value == approx(0.030960, 6)
    assert r.significant


def test_23_posthog_bayesian():
    r = compare(C20, T20, BAYES)
    assert r.expected == approx(0.63646)
    assert r.ci_rel[0] == approx(-0.0873, 4)
    assert r.ci_rel[1] == approx(1.36026)
    assert r.chance_to_win == approx(0.95759)
    assert r.significant  # CTW > 0.95
