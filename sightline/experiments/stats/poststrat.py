"""Post-stratification (gbstats-style) for mean and binomial metrics.

Stratum k (n_k = n_Ak + n_Bk, ν_k = n_k/N) contributes α_k = (ȳ_Ak, ȳ_Bk − ȳ_Ak) and the per-unit covariance
C_k = [[a, −a], [−a, a + b]], a = σ²_Ak·n_k/n_Ak, b = σ²_Bk·n_k/n_Bk. With m = Σ ν_k α_k:

    Σ = α(diag ν − ννᵀ)αᵀ/N + Σ_k ν_k C_k/N
    absolute: Δ̂ = m₁,        ∇ = (0, 1)
    relative: Δ̂ = m₁/|m₀|,   ∇ = (−m₁·sign(m₀)/m₀², 1/|m₀|)
    V = ∇ᵀΣ∇

Cells that cannot be analysed on their own (an arm with < 2 units or zero variance) are merged into the largest
other cell; with one cell left the ordinary test runs.
"""

from __future__ import annotations

import numpy as np

from .base import MetricStats, mean, variance
from .estimate import Effect, plain_effect

Cell = tuple[MetricStats, MetricStats]


def _viable(cell: Cell) -> bool:
    return all(s.n >= 2 and variance(s.n, s.sum, s.sum_squares, s.binomial) > 0 for s in cell)


def merge_cells(cells: list[Cell]) -> list[Cell]:
    cells = [c for c in cells if c[0].n + c[1].n > 0]
    while len(cells) > 1:
        bad = [i for i, c in enumerate(cells) if not _viable(c)]
        if not bad:
            break
        i = bad[0]
        cell = cells.pop(i)
        j = max(range(len(cells)), key=lambda k: cells[k][0].n + cells[k][1].n)
        cells[j] = (cells[j][0] + cell[0], cells[j][1] + cell[1])
    return cells


def stratified_effect(cells: list[Cell]) -> tuple[Effect, bool]:
    """(effect, post_stratification_applied)."""
    control = cells[0][0]
    treatment = cells[0][1]
    for a, b in cells[1:]:
        control, treatment = control + a, treatment + b
    overall = plain_effect(control, treatment)
    merged = merge_cells(cells)
    if len(merged) < 2:
        return overall, False
    n_k = np.array([a.n + b.n for a, b in merged], dtype=float)
    big_n = n_k.sum()
    nu = n_k / big_n
    alpha = np.zeros((2, len(merged)))
    c_sum = np.zeros((2, 2))
    for k, (a, b) in enumerate(merged):
        ya, yb = mean(a.n, a.sum), mean(b.n, b.sum)
        alpha[:, k] = (ya, yb - ya)
        va = variance(a.n, a.sum, a.sum_squares, a.binomial) * n_k[k] / a.n
        vb = variance(b.n, b.sum, b.sum_squares, b.binomial) * n_k[k] / b.n
        c_sum += nu[k] * np.array([[va, -va], [-va, va + vb]])
    m = alpha @ nu
    sigma = alpha @ (np.diag(nu) - np.outer(nu, nu)) @ alpha.T / big_n + c_sum / big_n
    var_abs = float(sigma[1, 1])
    if m[0] == 0:
        lift_rel, var_rel = float("nan"), float("nan")
    else:
        g = np.array([-m[1] * np.sign(m[0]) / m[0] ** 2, 1 / abs(m[0])])
        lift_rel = float(m[1] / abs(m[0]))
        var_rel = float(g @ sigma @ g)
    eff = Effect(
        control_mean=overall.control_mean,
        treatment_mean=overall.treatment_mean,
        lift_abs=float(m[1]),
        var_abs=var_abs,
        lift_rel=lift_rel,
        var_rel=var_rel,
        unit_var_a=overall.unit_var_a,  # Welch df from the pooled arms
        unit_var_b=overall.unit_var_b,
        n_a=overall.n_a,
        n_b=overall.n_b,
    )
    return eff, True
