"""Multiple-comparison corrections (applied after the engine, over goal and secondary metrics × variants ×
dimension values; guardrails stay out of the family)."""

from __future__ import annotations

import math

from scipy.stats import norm


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni: sort ascending, p′ᵢ = min(1, pᵢ(m−i)) (0-based i), running max; input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p_values[i] * (m - rank)))
        out[i] = running
    return out


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini–Hochberg: sort descending, p′ᵢ = min(1, pᵢ·m/(m−i)) (0-based i), running min; input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    out = [0.0] * m
    running = 1.0
    for rank, i in enumerate(order):
        running = min(running, min(1.0, p_values[i] * m / (m - rank)))
        out[i] = running
    return out


def adjusted_ci(lift: float, adjusted_p: float, alpha: float = 0.05) -> tuple[float, float]:
    """Interval implied by an adjusted p-value: s = |lift/z_{1−p′/2}|, lift ± z_{1−α/2}·s (normal).

    (−∞, ∞) if p′ > 0.999999. Report it only if it is strictly wider than the unadjusted interval.
    """
    if adjusted_p > 0.999999:
        return -math.inf, math.inf
    z_p = float(norm.ppf(1 - adjusted_p / 2))
    if z_p == 0:
        return -math.inf, math.inf
    s = abs(lift / z_p)
    z = float(norm.ppf(1 - alpha / 2))
    return lift - z * s, lift + z * s
