"""Fixed-horizon frequentist test: Welch t on the absolute or relative (delta-method) lift."""

from __future__ import annotations

import math

from scipy import stats as sps

ALTERNATIVES = ("two-sided", "greater", "less")


def t_test(
    estimate: float,
    std_error: float,
    df: float,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    null: float = 0.0,
) -> tuple[float, tuple[float, float]]:
    """(p-value, confidence interval) of a t statistic t = (Δ̂ − Δ₀)/SE with ν degrees of freedom.

    two-sided: p = 2(1 − F(|t|)), CI = Δ̂ ± t_{1−α/2}·SE
    greater (H1: Δ > Δ₀): p = 1 − F(t), CI = [Δ̂ − t_{1−α}·SE, +∞)
    less    (H1: Δ < Δ₀): p = F(t),     CI = (−∞, Δ̂ + t_{1−α}·SE]
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}")
    # (unfrozen distribution calls: freezing a scipy distribution costs more than the test itself)
    if math.isfinite(df):
        sf, ppf = (lambda x: sps.t.sf(x, df)), (lambda q: sps.t.ppf(q, df))
    else:
        sf, ppf = sps.norm.sf, sps.norm.ppf
    t = (estimate - null) / std_error
    if alternative == "two-sided":
        p = float(2 * sf(abs(t)))
        h = float(ppf(1 - alpha / 2)) * std_error
        return min(p, 1.0), (estimate - h, estimate + h)
    h = float(ppf(1 - alpha)) * std_error
    if alternative == "greater":
        return float(sf(t)), (estimate - h, math.inf)
    return float(sf(-t)), (-math.inf, estimate + h)
