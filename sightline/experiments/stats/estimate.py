"""Point estimates and their variances (delta method) for absolute and relative lift.

Non-CUPED arms use the per-unit mean and variance of the metric (ratio metrics: ratio of sums, delta-method
per-unit variance). CUPED arms come from :mod:`.cuped`. The relative lift divides by |ȳ_A|, the
*unadjusted* control mean, so a move from −10 to −5 is +50%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import DataError, MetricStats, covariance, mean, variance, variance_of_ratios


@dataclass(frozen=True)
class Effect:
    """Δ̂ and V on both scales plus what the tests need (per-unit variances for Welch df, n's)."""

    control_mean: float  # unadjusted ȳ_A
    treatment_mean: float  # unadjusted ȳ_B
    lift_abs: float
    var_abs: float
    lift_rel: float
    var_rel: float
    unit_var_a: float  # per-unit σ̃² (adjusted for CUPED), for the Welch–Satterthwaite df
    unit_var_b: float
    n_a: int
    n_b: int
    theta: float | None = None
    cuped_applied: bool = False

    @property
    def df(self) -> float:
        return welch_df(self.unit_var_a, self.n_a, self.unit_var_b, self.n_b)

    def headline(self, relative: bool) -> tuple[float, float]:
        """(estimate, variance) on the headline scale."""
        return (self.lift_rel, self.var_rel) if relative else (self.lift_abs, self.var_abs)


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """ν = (σ²_B/n_B + σ²_A/n_A)² / (σ⁴_B/(n_B²(n_B−1)) + σ⁴_A/(n_A²(n_A−1)))."""
    num = (var_b / n_b + var_a / n_a) ** 2
    den = var_b**2 / (n_b**2 * (n_b - 1)) + var_a**2 / (n_a**2 * (n_a - 1))
    return num / den if den > 0 else math.inf


def arm_moments(s: MetricStats) -> tuple[float, float]:
    """(mean, per-unit variance) of one arm without CUPED."""
    if s.is_ratio:
        if s.den_sum_squares is None or s.sum_product is None:
            raise DataError("missing_fields", "ratio metrics need den_sum_squares and sum_product")
        m = mean(s.n, s.sum)
        d = mean(s.n, s.den_sum or 0.0)
        if d == 0:
            raise DataError("zero_denominator", "the ratio's denominator sums to 0")
        var_m = variance(s.n, s.sum, s.sum_squares, s.binomial)
        var_d = variance(s.n, s.den_sum or 0.0, s.den_sum_squares)
        cov = covariance(s.n, s.sum, s.den_sum or 0.0, s.sum_product)
        return m / d, variance_of_ratios(m, var_m, d, var_d, cov)
    return mean(s.n, s.sum), variance(s.n, s.sum, s.sum_squares, s.binomial)


def lift_effect(
    n_a: int,
    mean_a: float,
    var_a: float,
    n_b: int,
    mean_b: float,
    var_b: float,
) -> Effect:
    """Δ̂ and V from per-unit means and variances of independent arms (no CUPED).

    absolute: Δ̂ = μ_B − μ_A, V = σ²_B/n_B + σ²_A/n_A
    relative: Δ̂ = (μ_B − μ_A)/|μ_A|, V = σ²_B/(n_B μ_A²) + σ²_A μ_B²/(n_A μ_A⁴)
    """
    diff = mean_b - mean_a
    var_abs = var_b / n_b + var_a / n_a
    if mean_a == 0:
        lift_rel, var_rel = math.nan, math.nan
    else:
        lift_rel = diff / abs(mean_a)
        var_rel = variance_of_ratios(mean_b, var_b / n_b, mean_a, var_a / n_a, 0.0)
    return Effect(
        control_mean=mean_a,
        treatment_mean=mean_b,
        lift_abs=diff,
        var_abs=var_abs,
        lift_rel=lift_rel,
        var_rel=var_rel,
        unit_var_a=var_a,
        unit_var_b=var_b,
        n_a=n_a,
        n_b=n_b,
    )


def plain_effect(control: MetricStats, treatment: MetricStats) -> Effect:
    mean_a, var_a = arm_moments(control)
    mean_b, var_b = arm_moments(treatment)
    return lift_effect(control.n, mean_a, var_a, treatment.n, mean_b, var_b)
