"""CUPED (regression adjustment on a pre-exposure covariate), gbstats-style.

Mean metrics: θ = cov_joint(Y,X)/σ²_joint(X) on both arms pooled; per arm μ̃ = ȳ − θx̄,
σ̃² = σ²_y + θ²σ²_x − 2θ cov_xy. Ratio metrics: delta method over β = (m̄_post, d̄_post, m̄_pre, d̄_pre)
with θ minimising the pooled variance. Both fall back to the unadjusted analysis (None) when the
covariate carries no information.
"""

from __future__ import annotations

import numpy as np

from .base import MetricStats, covariance, mean, variance
from .estimate import Effect

THETA_EPS = 1e-8


def cuped_theta(control: MetricStats, treatment: MetricStats) -> float:
    """θ from the pooled (joint) statistics of both arms; 0 if var(X) or var(Y) is 0."""
    j = control + treatment
    assert j.pre_sum is not None and j.pre_sum_product is not None
    var_y = variance(j.n, j.sum, j.sum_squares, j.binomial)
    var_x = variance(j.n, j.pre_sum, j.pre_sum_squares or 0.0, j.binomial)
    if var_x <= 0 or var_y <= 0:
        return 0.0
    return covariance(j.n, j.sum, j.pre_sum, j.pre_sum_product, j.binomial) / var_x


def _arm(s: MetricStats, theta: float) -> tuple[float, float, float, float, float]:
    """(ȳ, x̄, σ²_y, σ²_x, cov_xy) of one arm."""
    assert s.pre_sum is not None and s.pre_sum_product is not None
    y = mean(s.n, s.sum)
    x = mean(s.n, s.pre_sum)
    var_y = variance(s.n, s.sum, s.sum_squares, s.binomial)
    var_x = variance(s.n, s.pre_sum, s.pre_sum_squares or 0.0, s.binomial)
    cov = covariance(s.n, s.sum, s.pre_sum, s.pre_sum_product, s.binomial)
    return y, x, var_y, var_x, cov


def cuped_mean_effect(control: MetricStats, treatment: MetricStats) -> Effect | None:
    """CUPED-adjusted Δ̂ and V for mean/binomial metrics; None when θ = 0 (fall back)."""
    theta = cuped_theta(control, treatment)
    if theta == 0.0:
        return None
    y_a, x_a, vy_a, vx_a, c_a = _arm(control, theta)
    y_b, x_b, vy_b, vx_b, c_b = _arm(treatment, theta)
    mu_a = y_a - theta * x_a
    mu_b = y_b - theta * x_b
    adj_a = vy_a + theta**2 * vx_a - 2 * theta * c_a
    adj_b = vy_b + theta**2 * vx_b - 2 * theta * c_b
    n_a, n_b = control.n, treatment.n
    diff = mu_b - mu_a
    var_abs = adj_b / n_b + adj_a / n_a
    if y_a == 0:
        lift_rel, var_rel = float("nan"), float("nan")
    else:
        lift_rel = diff / abs(y_a)
        var_rel = adj_b / (n_b * y_a**2) + (
            vy_a * y_b**2 / y_a**2 - 2 * theta * c_a * y_b / y_a + theta**2 * vx_a
        ) / (n_a * y_a**2)
    return Effect(
        control_mean=y_a,
        treatment_mean=y_b,
        lift_abs=diff,
        var_abs=var_abs,
        lift_rel=lift_rel,
        var_rel=var_rel,
        unit_var_a=adj_a,
        unit_var_b=adj_b,
        n_a=n_a,
        n_b=n_b,
        theta=theta,
        cuped_applied=True,
    )


def ratio_moments(s: MetricStats) -> tuple[np.ndarray, np.ndarray]:
    """β = (m̄_post, d̄_post, m̄_pre, d̄_pre) and the 4×4 per-unit covariance matrix Λ."""
    n = s.n
    sums = [s.sum, s.den_sum, s.pre_sum, s.pre_den_sum]
    squares = [s.sum_squares, s.den_sum_squares, s.pre_sum_squares, s.pre_den_sum_squares]
    # cross products (i, j): x=0 y=1 z=2 w=3
    cross = {
        (0, 1): s.sum_product,
        (0, 2): s.pre_sum_product,
        (0, 3): s.main_pre_den_product,
        (1, 2): s.den_pre_product,
        (1, 3): s.den_pre_den_product,
        (2, 3): s.pre_pre_den_product,
    }
    binom = [s.binomial, False, s.binomial, False]
    beta = np.array([mean(n, float(v or 0.0)) for v in sums])
    lam = np.zeros((4, 4))
    for i in range(4):
        lam[i, i] = variance(n, float(sums[i] or 0.0), float(squares[i] or 0.0), binom[i])
    for (i, j), p in cross.items():
        c = covariance(n, float(sums[i] or 0.0), float(sums[j] or 0.0), float(p or 0.0), binom[i] and binom[j])
        lam[i, j] = lam[j, i] = c
    return beta, lam


def _grad_abs(beta: np.ndarray, theta: float) -> np.ndarray:
    """∇ of m̄_post/d̄_post − θ·m̄_pre/d̄_pre."""
    b0, b1, b2, b3 = beta
    return np.array([1 / b1, -b0 / b1**2, -theta / b3, theta * b2 / b3**2])


def cuped_ratio_effect(control: MetricStats, treatment: MetricStats) -> Effect | None:
    """CUPED for ratio metrics (delta method over four means); None when |θ| < 1e−8."""
    beta_a, lam_a = ratio_moments(control)
    beta_b, lam_b = ratio_moments(treatment)
    if beta_a[1] == 0 or beta_b[1] == 0 or beta_a[3] == 0 or beta_b[3] == 0:
        return None

    def parts(beta: np.ndarray, lam: np.ndarray) -> tuple[float, float]:
        g = _grad_abs(beta, 1.0)
        c = float(g[2:4] @ lam[2:4, 0:2] @ g[0:2])
        v = float(g[2:4] @ lam[2:4, 2:4] @ g[2:4])
        return c, v

    c_a, v_a = parts(beta_a, lam_a)
    c_b, v_b = parts(beta_b, lam_b)
    if v_a + v_b == 0:
        return None
    theta = -(c_a + c_b) / (v_a + v_b)
    if abs(theta) < THETA_EPS:
        return None
    n_a, n_b = control.n, treatment.n
    ga = _grad_abs(beta_a, theta)
    gb = _grad_abs(beta_b, theta)
    adj_a = float(ga @ lam_a @ ga)
    adj_b = float(gb @ lam_b @ gb)
    y_a = beta_a[0] / beta_a[1]
    y_b = beta_b[0] / beta_b[1]
    mu_a = y_a - theta * beta_a[2] / beta_a[3]
    mu_b = y_b - theta * beta_b[2] / beta_b[3]
    diff = float(mu_b - mu_a)
    var_abs = adj_b / n_b + adj_a / n_a
    if y_a == 0:
        lift_rel, var_rel = float("nan"), float("nan")
    else:
        g = abs(y_a)
        d = diff * np.sign(y_a)
        lift_rel = diff / g
        grad_a = np.array(
            [
                -(g + d) / (beta_a[1] * g**2),
                beta_a[0] * (g + d) / (beta_a[1] ** 2 * g**2),
                -ga[2] / g,
                -ga[3] / g,
            ]
        )
        grad_b = gb / g
        var_rel = float(grad_a @ lam_a @ grad_a / n_a + grad_b @ lam_b @ grad_b / n_b)
    return Effect(
        control_mean=float(y_a),
        treatment_mean=float(y_b),
        lift_abs=diff,
        var_abs=var_abs,
        lift_rel=float(lift_rel),
        var_rel=var_rel,
        unit_var_a=adj_a,
        unit_var_b=adj_b,
        n_a=n_a,
        n_b=n_b,
        theta=float(theta),
        cuped_applied=True,
    )


def cuped_effect(control: MetricStats, treatment: MetricStats) -> Effect | None:
    if not (control.has_pre and treatment.has_pre):
        return None
    if control.is_ratio:
        return cuped_ratio_effect(control, treatment)
    return cuped_mean_effect(control, treatment)
