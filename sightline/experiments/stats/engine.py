"""``compare``: one metric, treatment versus control."""

from __future__ import annotations

import math
from dataclasses import replace

from . import bayesian, sequential
from .base import (
    DEFAULT_SETTINGS,
    Comparison,
    DataError,
    MetricStats,
    StatsSettings,
    mean,
)
from .cuped import cuped_effect
from .estimate import Effect, plain_effect
from .frequentist import ALTERNATIVES, t_test
from .poststrat import stratified_effect

METHODS = ("bayesian", "frequentist")


def validate(control: MetricStats, treatment: MetricStats, settings: StatsSettings) -> None:
    if settings.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if settings.alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}")
    if not 0.5 < settings.confidence_level < 1:
        raise ValueError("confidence_level must be in (0.5, 1)")
    if settings.sequential and not settings.sequential_tuning > 0:
        raise ValueError("sequential_tuning must be > 0")
    if settings.proper_prior and not settings.prior_stddev > 0:
        raise ValueError("prior_stddev must be > 0 for a proper prior")
    if control.n < 0 or treatment.n < 0:
        raise ValueError("n must be >= 0")
    if control.is_ratio != treatment.is_ratio:
        raise ValueError("both arms must be ratio metrics or neither")


def _no_result(
    control: MetricStats, treatment: MetricStats, settings: StatsSettings, code: str
) -> Comparison:
    """gbstats' default result: nothing is claimed (p = 1, CI (0, 0), chance to win 0.5)."""
    try:
        ma = control.sum / control.den_sum if control.is_ratio else mean(control.n, control.sum)
        mb = treatment.sum / treatment.den_sum if treatment.is_ratio else mean(treatment.n, treatment.sum)
    except ZeroDivisionError:
        ma = mb = 0.0
    freq = settings.method == "frequentist"
    return Comparison(
        control_mean=ma,
        treatment_mean=mb,
        lift_abs=mb - ma,
        lift_rel=(mb - ma) / abs(ma) if ma else 0.0,
        ci_abs=(0.0, 0.0),
        ci_rel=(0.0, 0.0),
        p_value=1.0 if freq else None,
        chance_to_win=None if freq else 0.5,
        risk=None if freq else (0.0, 0.0),
        significant=False,
        std_error=0.0,
        error=code,
        expected=0.0,
    )


def estimate_effect(
    control: MetricStats, treatment: MetricStats, settings: StatsSettings
) -> Effect:
    """Δ̂ and V on both scales (CUPED when asked and informative). Raises DataError when not analysable."""
    if control.n <= 1 or treatment.n <= 1:
        raise DataError("not_enough_data", "each variant needs at least 2 units")
    eff = plain_effect(control, treatment)
    if not (eff.unit_var_a > 0 and eff.unit_var_b > 0):
        raise DataError("zero_variance", "a variant has zero variance")
    if eff.control_mean == 0:
        raise DataError("zero_baseline", "the control mean is 0")
    if settings.cuped:
        adjusted = cuped_effect(control, treatment)
        if adjusted is not None and adjusted.var_abs > 0 and adjusted.var_rel > 0:
            eff = adjusted
    return eff


def compare(
    control: MetricStats, treatment: MetricStats, settings: StatsSettings = DEFAULT_SETTINGS
) -> Comparison:
    """Compare treatment with control for one metric.

    Frequentist: Welch t-test (or always-valid sequential test) on the absolute and relative lift.
    Bayesian: Gaussian posterior of the effect → credible intervals, chance to win, risk.
    The headline scale (``settings.relative``) drives p_value / chance_to_win / risk / std_error / significant;
    intervals are always given on both scales. When the data cannot be analysed (n ≤ 1, zero variance,
    zero control mean) the result has ``error`` set and claims nothing.
    """
    validate(control, treatment, settings)
    try:
        eff = estimate_effect(control, treatment, settings)
    except DataError as e:
        return _no_result(control, treatment, settings, e.code)
    return result_from_effect(eff, settings)


def compare_stratified(
    strata: list[tuple[MetricStats, MetricStats]], settings: StatsSettings = DEFAULT_SETTINGS
) -> Comparison:
    """Post-stratified comparison: ``strata`` is a list of (control, treatment) rows, one per stratum
    (e.g. a pre-exposure segment). Mean and binomial metrics only; ratio metrics and CUPED fall back to
    ``compare`` on the summed rows (``post_stratified`` is False then)."""
    if not strata:
        raise ValueError("strata must not be empty")
    control, treatment = strata[0]
    for a, b in strata[1:]:
        control, treatment = control + a, treatment + b
    validate(control, treatment, settings)
    if control.is_ratio or settings.cuped or len(strata) == 1:
        return compare(control, treatment, settings)
    try:
        estimate_effect(control, treatment, settings)  # same guards as the pooled analysis
        eff, applied = stratified_effect(list(strata))
    except DataError as e:
        return _no_result(control, treatment, settings, e.code)
    if not (eff.var_abs > 0 and eff.var_rel > 0):
        return compare(control, treatment, settings)
    return replace(result_from_effect(eff, settings), post_stratified=applied)


def result_from_effect(eff: Effect, settings: StatsSettings) -> Comparison:
    """Run the configured test on an estimated effect."""
    alpha = settings.alpha
    se_abs = math.sqrt(eff.var_abs)
    se_rel = math.sqrt(eff.var_rel)
    se = se_rel if settings.relative else se_abs
    df = eff.df
    p_value: float | None = None
    ctw: float | None = None
    risk: tuple[float, float] | None = None
    expected = eff.lift_rel if settings.relative else eff.lift_abs
    if settings.method == "frequentist":
        if settings.sequential:
            n_total = eff.n_a + eff.n_b

            def run(est: float, s: float) -> tuple[float, tuple[float, float]]:
                return sequential.sequential_test(
                    est, s, n_total, alpha, settings.sequential_tuning, settings.alternative
                )

            df_out = None
        else:

            def run(est: float, s: float) -> tuple[float, tuple[float, float]]:
                return t_test(est, s, df, alpha, settings.alternative)

            df_out = df
        p_abs, ci_abs = run(eff.lift_abs, se_abs)
        p_rel, ci_rel = run(eff.lift_rel, se_rel)
        p_value = p_rel if settings.relative else p_abs
        significant = p_value < alpha
    else:
        df_out = None
        scale = abs(eff.control_mean)
        prior = {
            "prior_mean": settings.prior_mean,
            "prior_stddev": settings.prior_stddev,
            "proper": settings.proper_prior,
        }
        mu_rel, s_rel = bayesian.posterior(eff.lift_rel, eff.var_rel, **prior)
        mu_abs, s_abs = bayesian.posterior(eff.lift_abs, eff.var_abs, scale=scale, **prior)
        ci_rel = bayesian.credible_interval(mu_rel, s_rel, settings.confidence_level)
        ci_abs = bayesian.credible_interval(mu_abs, s_abs, settings.confidence_level)
        mu, s = (mu_rel, s_rel) if settings.relative else (mu_abs, s_abs)
        se = s
        expected = mu
        ctw = bayesian.chance_to_win(mu, s, settings.inverse)
        risk = bayesian.risk(mu, s, settings.inverse)
        significant = ctw > settings.confidence_level or ctw < 1 - settings.confidence_level
    return Comparison(
        control_mean=eff.control_mean,
        treatment_mean=eff.treatment_mean,
        lift_abs=eff.lift_abs,
        lift_rel=eff.lift_rel,
        ci_abs=ci_abs,
        ci_rel=ci_rel,
        p_value=p_value,
        chance_to_win=ctw,
        risk=risk,
        significant=significant,
        std_error=se,
        cuped_applied=eff.cuped_applied,
        std_error_abs=se_abs,
        std_error_rel=se_rel,
        degrees_of_freedom=df_out,
        theta=eff.theta,
        expected=expected,
    )
