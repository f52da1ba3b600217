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


def chance_to_win_from_ci(
    estimate: float, ci: tuple[float, float], alpha: float = 0.05, inverse: bool = False
) -> float:
    """Chance to win reconstructed from a frequentist interval (guardrail "safe" status, gbstats TS):
    s = half-width/z (z_{1−α/2} for a two-sided interval, z_{1−α} for a one-sided one), CTW = 1 − Φ(−Δ̂/s)."""
    lo, hi = ci
    if math.isinf(lo) and math.isinf(hi):
        return 0.5
    if math.isinf(lo) or math.isinf(hi):
        half = hi - estimate if math.isinf(lo) else estimate - lo
        z = float(sps.norm.ppf(1 - alpha))
    else:
        half = (hi - lo) / 2
        z = float(sps.norm.ppf(1 - alpha / 2))
    if half <= 0:
        p = 1.0 if estimate > 0 else 0.0 if estimate < 0 else 0.5
    else:
        p = float(sps.norm.sf(-estimate / (half / z)))
    return 1 - p if inverse else p
