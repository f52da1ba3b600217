"""Sample ratio mismatch: χ² goodness of fit of units per variant against the configured weights."""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import chi2 as chi2_dist

SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SRMResult:
    chi2: float
    p_value: float
    mismatch: bool  # p_value < threshold
    expected: tuple[float, ...] = ()  # per variant (0 for weight-0 variants)
    df: int = 0


def srm_test(observed: list[int], weights: list[float], threshold: float = SRM_THRESHOLD) -> SRMResult:
    """χ² = Σ(o−e)²/e, e_i = (w_i/Σw)·Σo, p = χ²_{k−1}.sf.

    Variants with weight 0 are left out of Σo and of the degrees of freedom (GrowthBook TS semantics).
    p = 1 when there is no traffic or fewer than two weighted variants.
    """
    if len(observed) != len(weights):
        raise ValueError("observed and weights must have the same length")
    if any(w < 0 for w in weights) or any(o < 0 for o in observed):
        raise ValueError("observed counts and weights must be non-negative")
    keep = [i for i, w in enumerate(weights) if w > 0]
    total_w = sum(weights[i] for i in keep)
    total_o = sum(observed[i] for i in keep)
    expected = [0.0] * len(observed)
    if total_o == 0 or len(keep) < 2:
        return SRMResult(0.0, 1.0, False, tuple(expected), max(len(keep) - 1, 0))
    x2 = 0.0
    for i in keep:
        e = weights[i] / total_w * total_o
        expected[i] = e
        x2 += (observed[i] - e) ** 2 / e
    df = len(keep) - 1
    p = float(chi2_dist.sf(x2, df))
    return SRMResult(x2, p, p < threshold, tuple(expected), df)
