"""Bayesian test: a Gaussian likelihood N(Δ̂, V) for the effect δ with a Gaussian prior on the relative lift.

Flat (improper) prior: posterior N(Δ̂, V). Proper prior N(μ₀, σ₀²): τ = 1/V + 1/σ₀², μ = (Δ̂/V + μ₀/σ₀²)/τ,
s = τ^−½. For absolute analyses the prior is rescaled to μ₀|ȳ_A| and σ₀²ȳ_A².
Chance to win = P(δ > 0); risk = (E[max(δ,0)], E[max(−δ,0)]) — the expected loss of choosing control and of
choosing treatment respectively. All closed form.
"""

from __future__ import annotations

import math

from scipy.stats import norm


def posterior(
    estimate: float,
    var: float,
    prior_mean: float = 0.0,
    prior_stddev: float = 0.3,
    proper: bool = False,
    scale: float = 1.0,
) -> tuple[float, float]:
    """(μ, s) of the posterior of δ. ``scale`` = |ȳ_A| rescales a relative prior to the absolute scale."""
    if not proper or prior_stddev <= 0 or not math.isfinite(prior_stddev):
        return estimate, math.sqrt(var)
    m0 = prior_mean * scale
    v0 = (prior_stddev * scale) ** 2
    if var <= 0:
        return estimate, 0.0
    tau = 1 / var + 1 / v0
    return (estimate / var + m0 / v0) / tau, tau**-0.5


def chance_to_win(mu: float, s: float, inverse: bool = False) -> float:
    """P(δ > 0) (P(δ < 0) for "lower is better" metrics)."""
    if s <= 0:
        p = 1.0 if mu > 0 else 0.0 if mu < 0 else 0.5
    else:
        p = float(norm.sf(0, mu, s))
    return 1 - p if inverse else p


def risk(mu: float, s: float, inverse: bool = False) -> tuple[float, float]:
    """Expected loss (of choosing control, of choosing treatment).

    risk_ctrl = E[max(δ,0)] = μΦ(μ/s) + sφ(μ/s); risk_trt = E[max(−δ,0)] = −μΦ(−μ/s) + sφ(μ/s).
    Inverse metrics swap the two.
    """
    if s <= 0 or abs(mu / s) > 37:
        r = (max(mu, 0.0), max(-mu, 0.0))
    else:
        k = mu / s
        pdf = float(norm.pdf(k))
        r = (mu * float(norm.cdf(k)) + s * pdf, -mu * float(norm.cdf(-k)) + s * pdf)
    return (r[1], r[0]) if inverse else r


def credible_interval(mu: float, s: float, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed μ ± z_{1−α/2}·s."""
    z = float(norm.ppf(1 - (1 - level) / 2))
    return mu - z * s, mu + z * s
