"""Power, minimum detectable effect, sample size and running time (relative lift, normal approximation).

Inputs describe the metric's *per-unit* distribution in the control: ``mean`` (μ > 0 required; for a conversion
rate p) and ``variance`` (σ²; p(1−p) for a conversion). With n units per arm and μ_B = μ(1+MDE):

    V = σ²/(μ²n) + σ²μ_B²/(μ⁴n)
    frequentist power = 1 − Φ(z* − MDE/√V) + Φ(−z* − MDE/√V),  z* = z_{1−α/2}

Sequential testing inflates σ² by (z_seq/z*)², z_seq = the always-valid half-width in SE units at 2n units.
Bayesian power uses the decision cut-points of the posterior (identical to frequentist with a flat prior).
The calculator does not adjust α for multiple arms.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from .base import DEFAULT_SETTINGS, MetricStats, StatsSettings
from .estimate import arm_moments
from .sequential import rho


def metric_mean_variance(stats: MetricStats) -> tuple[float, float]:
    """(mean, per-unit variance) of historical data, to feed the calculator."""
    return arm_moments(stats)


def _check(mean: float, variance: float, users_per_variant: float) -> None:
    if not mean > 0:
        raise ValueError("mean must be > 0 (relative lift)")
    if variance < 0:
        raise ValueError("variance must be >= 0")
    if users_per_variant <= 0:
        raise ValueError("users_per_variant must be > 0")


def sequential_multiplier(users_per_variant: float, alpha: float, tuning: float) -> float:
    """z_seq = √n·√(2(nρ²+1)·ln(√(nρ²+1)/α)/(nρ)²) with n = 2·users_per_variant."""
    n = 2 * users_per_variant
    r = rho(alpha, tuning, True)
    nr2 = n * r * r
    return math.sqrt(n) * math.sqrt(2 * (nr2 + 1) * math.log(math.sqrt(nr2 + 1) / alpha) / (n * r) ** 2)


def _effective_variance(variance: float, users_per_variant: float, settings: StatsSettings) -> float:
    if settings.sequential and settings.method == "frequentist":
        z = float(norm.ppf(1 - settings.alpha / 2))
        zs = sequential_multiplier(users_per_variant, settings.alpha, settings.sequential_tuning)
        return variance * (zs / z) ** 2
    return variance


def _power(mde, mean, variance, n, settings: StatsSettings):
    """Vectorised in ``mde``."""
    mde = np.asarray(mde, dtype=float)
    z = float(norm.ppf(1 - settings.alpha / 2))
    var = _effective_variance(variance, n, settings)
    mean_b = mean * (1 + mde)
    v = var / (mean**2 * n) + var * mean_b**2 / (mean**4 * n)
    sd = np.sqrt(v)
    if settings.method == "bayesian" and settings.proper_prior and settings.prior_stddev > 0:
        pv = settings.prior_stddev**2
        tau = 1 / v + 1 / pv
        shift = v * settings.prior_mean / pv
        upper = (z * v * np.sqrt(tau) - shift - mde) / sd
        lower = (-z * v * np.sqrt(tau) - shift - mde) / sd
    else:
        upper = z - mde / sd
        lower = -z - mde / sd
    return 1 - norm.cdf(upper) + norm.cdf(lower)


def power(
    mde: float,
    mean: float,
    variance: float,
    users_per_variant: float,
    settings: StatsSettings = DEFAULT_SETTINGS,
) -> float:
    """Probability of a significant result if the true relative lift is ``mde``."""
    _check(mean, variance, users_per_variant)
    return float(_power(mde, mean, variance, users_per_variant, settings))


def minimum_detectable_effect(
    mean: float,
    variance: float,
    users_per_variant: float,
    target_power: float = 0.8,
    settings: StatsSettings = DEFAULT_SETTINGS,
) -> float | None:
    """Smallest positive relative lift reaching ``target_power``; None if infeasible.

    Frequentist / flat prior: closed form — with z = z_{1−α/2} − z_{1−π} and σ²_n = σ²/n solve
    a x² + b x + c = 0 (a = 1 − z²σ²_n/μ², b = −2μ, c = μ² − z²σ²_n), MDE = (x − μ)/μ; infeasible if
    a ≤ 0. Proper prior: grid search (step 1e−3, then 1e−5) on the power function.
    """
    _check(mean, variance, users_per_variant)
    if not 0 < target_power < 1:
        raise ValueError("target_power must be in (0, 1)")
    if settings.method == "bayesian" and settings.proper_prior:
        return _grid_mde(mean, variance, users_per_variant, target_power, settings)
    var = _effective_variance(variance, users_per_variant, settings)
    z = float(norm.ppf(1 - settings.alpha / 2) - norm.ppf(1 - target_power))
    s2n = var / users_per_variant
    a = 1 - z * z * s2n / mean**2
    if a <= 0:
        return None
    b = -2 * mean
    c = mean**2 - z * z * s2n
    x = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return (x - mean) / mean


def _grid_mde(mean, variance, n, target, settings, max_mde: float = 100.0) -> float | None:
    coarse = np.arange(1, int(max_mde / 1e-3) + 1) * 1e-3
    pw = _power(coarse, mean, variance, n, settings)
    hit = np.nonzero(pw >= target)[0]
    if hit.size == 0:
        return None
    hi = coarse[hit[0]]
    fine = hi - 1e-3 + np.arange(1, 101) * 1e-5
    pw = _power(fine, mean, variance, n, settings)
    return float(fine[np.nonzero(pw >= target)[0][0]])


def sample_size(
    mde: float,
    mean: float,
    variance: float,
    target_power: float = 0.8,
    settings: StatsSettings = DEFAULT_SETTINGS,
    max_users: float = 1e12,
) -> int | None:
    """Smallest number of units per variant whose power reaches ``target_power``; None if > max_users."""
    _check(mean, variance, 1)
    if mde == 0:
        return None

    def ok(n: int) -> bool:
        return power(mde, mean, variance, n, settings) >= target_power

    lo, hi = 1, 2
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > max_users:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi if not ok(lo) else lo


def running_time(
    mde: float,
    mean: float,
    variance: float,
    weekly_users: float,
    variants: int = 2,
    target_power: float = 0.8,
    settings: StatsSettings = DEFAULT_SETTINGS,
    max_weeks: int = 52,
) -> int | None:
    """First week w whose cumulative users w·weekly_users/variants per arm give power (rounded to 2 dp)
    ≥ target; None if not reached within ``max_weeks``."""
    if variants < 2:
        raise ValueError("variants must be >= 2")
    if weekly_users <= 0:
        raise ValueError("weekly_users must be > 0")
    for week in range(1, max_weeks + 1):
        n = week * weekly_users / variants
        if round(power(mde, mean, variance, n, settings), 2) >= target_power:
            return week
    return None
