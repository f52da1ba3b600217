"""Always-valid (anytime) confidence intervals and p-values, gbstats-style.

Asymptotic confidence sequence of Waudby-Smith et al. (arXiv 2103.06476v7; eqs. 9, 134, 155, 161): a normal
mixture martingale with mixing variance ρ² tuned so that the interval is tightest at N = N_tune total units.
Inputs are the estimate Δ̂ and its standard error from the fixed-horizon analysis (so it works for relative
lift, CUPED and ratio metrics) and N = n_A + n_B; s² = SE²·N.
"""

from __future__ import annotations

import math


def rho(alpha: float, tuning: float, two_sided: bool = True) -> float:
    """ρ = √((−2 ln α′ + ln(−2 ln α′ + 1))/N_tune), α′ = α two-sided, 2α one-sided."""
    a = alpha if two_sided else 2 * alpha
    la = -2 * math.log(a)
    return math.sqrt((la + math.log(la + 1)) / tuning)


def halfwidth(
    std_error: float, n_total: float, alpha: float, tuning: float, two_sided: bool = True,
    rho_value: float | None = None,
) -> float:
    """Half-width of the always-valid interval (normal based, no t)."""
    r = rho(alpha, tuning, two_sided) if rho_value is None else rho_value
    s2 = std_error**2 * n_total
    nr2 = n_total * r * r
    if two_sided:
        return math.sqrt(s2 * 2 * (nr2 + 1) * math.log(math.sqrt(nr2 + 1) / alpha) / (n_total * r) ** 2)
    return math.sqrt(s2 * 2 * (nr2 + 1) / (n_total * r) ** 2 * math.log(1 + math.sqrt(nr2 + 1) / (2 * alpha)))


def p_value_two_sided(
    estimate: float, std_error: float, n_total: float, alpha: float, tuning: float, null: float = 0.0
) -> float:
    """p = min(1, 1/E), E = exp(ρ²Z²/(2(Nρ²+1)))/√(Nρ²+1), Z² = (Δ̂−Δ₀)²N/SE²."""
    r = rho(alpha, tuning, True)
    nr2 = n_total * r * r
    z2 = (estimate - null) ** 2 * n_total / std_error**2
    log_e = r * r * z2 / (2 * (nr2 + 1)) - 0.5 * math.log(nr2 + 1)
    if log_e <= 0:
        return 1.0
    return min(1.0, math.exp(-log_e))


class SequentialError(ValueError):
    pass


def p_value_one_sided(
    estimate: float,
    std_error: float,
    n_total: float,
    tuning: float,
    alternative: str = "greater",
    null: float = 0.0,
    lo: float = 1e-5,
    hi: float = 0.4999,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> float:
    """The α at which the one-sided bound crosses Δ₀ (bisection; ρ held at its α = 0.05 value).

    Returns ``lo`` if even the α = lo bound excludes Δ₀ and ``hi`` if even the α = hi bound does not.
    """
    r = rho(0.05, tuning, two_sided=False)
    sign = 1.0 if alternative == "greater" else -1.0
    d = sign * (estimate - null)  # > 0 means in the direction of the alternative

    def margin(a: float) -> float:  # > 0: the bound at level a excludes Δ₀
        return d - halfwidth(std_error, n_total, a, tuning, two_sided=False, rho_value=r)

    if margin(lo) > 0:
        return lo
    if margin(hi) <= 0:
        return hi
    a, b = lo, hi
    for _ in range(max_iter):
        mid = (a + b) / 2
        if margin(mid) > 0:
            b = mid
        else:
            a = mid
        if b - a < tol:
            return (a + b) / 2
    raise SequentialError("NUMERICAL_PVALUE_NOT_CONVERGED")


def sequential_test(
    estimate: float,
    std_error: float,
    n_total: float,
    alpha: float = 0.05,
    tuning: float = 5000,
    alternative: str = "two-sided",
) -> tuple[float, tuple[float, float]]:
    """(always-valid p-value, always-valid interval)."""
    if alpha >= 0.5:
        raise SequentialError("ALPHA_GREATER_THAN_0.5")
    if alternative == "two-sided":
        h = halfwidth(std_error, n_total, alpha, tuning, True)
        return p_value_two_sided(estimate, std_error, n_total, alpha, tuning), (estimate - h, estimate + h)
    h = halfwidth(std_error, n_total, alpha, tuning, False)
    p = p_value_one_sided(estimate, std_error, n_total, tuning, alternative)
    if alternative == "greater":
        return p, (estimate - h, math.inf)
    return p, (-math.inf, estimate + h)
