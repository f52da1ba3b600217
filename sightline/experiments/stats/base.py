"""Data types of the statistics engine and the moment helpers shared by every test.

Everything here is a pure function of sufficient statistics (counts, sums, sums of squares and cross
products); see ``docs/experiments-statistics.md`` for the formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SETTINGS",
    "Comparison",
    "DataError",
    "MetricStats",
    "Moments",
    "StatsSettings",
    "covariance",
    "mean",
    "pooled",
    "variance",
    "variance_of_ratios",
]


@dataclass(frozen=True)
class MetricStats:
    """One variant of one metric: per-unit (per-user) sufficient statistics.

    x is the per-unit value (0/1 for a conversion, a count, a sum of a property...). For ratio metrics y is
    the per-unit denominator (the metric is Σx/Σy, analysed with the delta method). For CUPED z is the same
    metric measured on the unit before exposure (and w the pre-exposure denominator of a ratio metric).
    All fields are additive: sum rows of dimensions/strata/periods to aggregate.
    """

    n: int  # units (exposed users)
    sum: float  # Σ x
    sum_squares: float  # Σ x²  (ignored when ``binomial``)
    den_sum: float | None = None  # ratio metrics: Σ y
    den_sum_squares: float | None = None  # Σ y²
    sum_product: float | None = None  # Σ x·y
    pre_sum: float | None = None  # CUPED: Σ z
    pre_sum_squares: float | None = None  # Σ z²
    pre_sum_product: float | None = None  # Σ x·z
    # --- extensions (not in the first draft of the interface) ---
    binomial: bool = False  # x ∈ {0,1}: σ² = p(1−p) (population formula, as gbstats' ProportionStatistic)
    # CUPED for ratio metrics: pre-exposure denominator w and the remaining cross products.
    pre_den_sum: float | None = None  # Σ w
    pre_den_sum_squares: float | None = None  # Σ w²
    main_pre_den_product: float | None = None  # Σ x·w
    den_pre_product: float | None = None  # Σ y·z
    den_pre_den_product: float | None = None  # Σ y·w
    pre_pre_den_product: float | None = None  # Σ z·w

    @property
    def is_ratio(self) -> bool:
        return self.den_sum is not None

    @property
    def has_pre(self) -> bool:
        if self.pre_sum is None or self.pre_sum_product is None:
            return False
        if not self.binomial and self.pre_sum_squares is None:
            return False
        if self.is_ratio:
            return None not in (
                self.pre_den_sum,
                self.pre_den_sum_squares,
                self.main_pre_den_product,
                self.den_pre_product,
                self.den_pre_den_product,
                self.pre_pre_den_product,
            )
        return True

    def __add__(self, other: MetricStats) -> MetricStats:
        """Add two rows (e.g. two dimension values or two periods of the same variant)."""

        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        return MetricStats(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_squares=self.sum_squares + other.sum_squares,
            den_sum=add(self.den_sum, other.den_sum),
            den_sum_squares=add(self.den_sum_squares, other.den_sum_squares),
            sum_product=add(self.sum_product, other.sum_product),
            pre_sum=add(self.pre_sum, other.pre_sum),
            pre_sum_squares=add(self.pre_sum_squares, other.pre_sum_squares),
            pre_sum_product=add(self.pre_sum_product, other.pre_sum_product),
            binomial=self.binomial and other.binomial,
            pre_den_sum=add(self.pre_den_sum, other.pre_den_sum),
            pre_den_sum_squares=add(self.pre_den_sum_squares, other.pre_den_sum_squares),
            main_pre_den_product=add(self.main_pre_den_product, other.main_pre_den_product),
            den_pre_product=add(self.den_pre_product, other.den_pre_product),
            den_pre_den_product=add(self.den_pre_den_product, other.den_pre_den_product),
            pre_pre_den_product=add(self.pre_pre_den_product, other.pre_pre_den_product),
        )


@dataclass(frozen=True)
class StatsSettings:
    """How to compare two variants."""

    method: str = "bayesian"  # "bayesian" | "frequentist"
    confidence_level: float = 0.95  # 1 − α; also the Bayesian chance-to-win decision threshold
    sequential: bool = False  # frequentist only: always-valid (Waudby-Smith / gbstats) intervals and p
    sequential_tuning: float = 5000  # N_tune: the total sample size where the interval is tightest
    cuped: bool = False  # use the pre-exposure covariate when the stats carry one
    prior_mean: float = 0.0  # Gaussian prior on the *relative* effect (Bayesian)
    prior_stddev: float = 0.3
    proper_prior: bool = False  # False: flat prior, posterior = N(Δ̂, V)
    relative: bool = True  # relative lift is the headline (p-value, CTW, risk, std_error)
    # --- extensions ---
    alternative: str = "two-sided"  # frequentist: "two-sided" | "greater" (H1: Δ>0) | "less" (H1: Δ<0)
    inverse: bool = False  # "lower is better": Bayesian CTW = P(δ<0) and risk swapped

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence_level


DEFAULT_SETTINGS = StatsSettings()  # frozen, so safe as a shared default argument


@dataclass(frozen=True)
class Comparison:
    """Treatment versus control for one metric."""

    control_mean: float  # unadjusted (ratio of sums for ratio metrics)
    treatment_mean: float
    lift_abs: float  # μ̃_B − μ̃_A (CUPED-adjusted when cuped_applied)
    lift_rel: float  # (μ̃_B − μ̃_A)/|ȳ_A|
    ci_abs: tuple[float, float]  # confidence (frequentist) or credible (Bayesian) interval
    ci_rel: tuple[float, float]
    p_value: float | None  # frequentist
    chance_to_win: float | None  # bayesian
    risk: tuple[float, float] | None  # bayesian expected loss (choosing control, choosing treatment)
    significant: bool
    std_error: float  # of the headline (relative or absolute) estimate
    cuped_applied: bool = False
    # --- extensions ---
    std_error_abs: float = 0.0
    std_error_rel: float = 0.0
    degrees_of_freedom: float | None = None  # Welch–Satterthwaite (fixed-horizon frequentist)
    theta: float | None = None  # CUPED coefficient when applied
    error: str | None = None  # set when the data cannot be analysed (default "no result" values)
    post_stratified: bool = False  # compare_stratified used more than one stratum
    expected: float = 0.0  # headline point estimate: Δ̂ (frequentist) or the posterior mean (Bayesian)


class DataError(ValueError):
    """The statistics cannot be analysed (too few units, zero variance, zero baseline...)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class Moments:
    """Per-unit mean and variance of one arm, plus what the relative-lift variance needs."""

    n: int
    mean: float  # possibly CUPED-adjusted mean μ̃
    variance: float  # per-unit variance of μ̃ (σ̃²)
    raw_mean: float  # unadjusted mean ȳ


def mean(n: float, s: float) -> float:
    return s / n if n > 0 else 0.0


def variance(n: float, s: float, q: float, binomial: bool = False) -> float:
    """Per-unit variance: p(1−p) for binomial, else (Q − S²/n)/(n−1) (0 when n ≤ 1)."""
    if binomial:
        if n <= 0:
            return 0.0
        p = s / n
        return p * (1.0 - p)
    if n <= 1:
        return 0.0
    return max((q - s * s / n) / (n - 1), 0.0)


def covariance(n: float, sa: float, sb: float, p: float, both_binomial: bool = False) -> float:
    """cov(a,b) = (P − S_a S_b/n)/(n−1); for two binomial variables P/n − S_a S_b/n²."""
    if both_binomial:
        if n <= 0:
            return 0.0
        return p / n - sa * sb / (n * n)
    if n <= 1:
        return 0.0
    return (p - sa * sb / n) / (n - 1)


def variance_of_ratios(m: float, var_m: float, d: float, var_d: float, cov: float) -> float:
    """Delta-method variance of m/d: σ²_m/d² + σ²_d m²/d⁴ − 2 c m/d³."""
    return var_m / d**2 + var_d * m**2 / d**4 - 2.0 * cov * m / d**3


def pooled(a: MetricStats, b: MetricStats) -> MetricStats:
    return a + b


def finite(x: float) -> bool:
    return math.isfinite(x)
