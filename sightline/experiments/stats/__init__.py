"""Experiment statistics engine: pure functions over sufficient statistics (no I/O, no randomness).

Public API (stable; the experiments service codes against it):

- :class:`MetricStats`, :class:`StatsSettings`, :class:`Comparison`, :class:`SRMResult`
- :func:`compare` — treatment vs control (frequentist Welch / sequential, or Bayesian; CUPED; ratio metrics)
- :func:`srm_test` — sample-ratio-mismatch χ² test
- :func:`holm`, :func:`benjamini_hochberg`, :func:`adjusted_ci` — multiple-comparison corrections
- :func:`power`, :func:`minimum_detectable_effect`, :func:`sample_size`, :func:`running_time`
- :func:`winsorize_threshold` — the percentile cap (the service caps in SQL; this is the reference)

Formulas: docs/experiments-statistics.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Comparison, DataError, MetricStats, StatsSettings


@dataclass(frozen=True)
class SRMResult:
    chi2: float
    p_value: float
    mismatch: bool  # p_value < threshold
    expected: tuple[float, ...] = ()
    df: int = 0


def compare(
    control: MetricStats, treatment: MetricStats, settings: StatsSettings = StatsSettings()
) -> Comparison:
    """Compare treatment with control for one metric."""
    raise NotImplementedError


def srm_test(observed: list[int], weights: list[float], threshold: float = 0.001) -> SRMResult:
    """χ² goodness of fit of the observed units per variant against the configured weights."""
    raise NotImplementedError


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in input order."""
    raise NotImplementedError


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini–Hochberg (FDR) adjusted p-values, in input order."""
    raise NotImplementedError


def adjusted_ci(
    lift: float, adjusted_p: float, alpha: float = 0.05
) -> tuple[float, float]:
    """Normal interval implied by an adjusted p-value (use it only if wider than the original CI)."""
    raise NotImplementedError


def power(
    mde: float,
    mean: float,
    variance: float,
    users_per_variant: float,
    settings: StatsSettings = StatsSettings(),
) -> float:
    """Power to detect a relative lift ``mde`` with ``users_per_variant`` units in each arm."""
    raise NotImplementedError


def minimum_detectable_effect(
    mean: float,
    variance: float,
    users_per_variant: float,
    target_power: float = 0.8,
    settings: StatsSettings = StatsSettings(),
) -> float | None:
    """Smallest relative lift detectable with ``target_power``; None if infeasible."""
    raise NotImplementedError


def sample_size(
    mde: float,
    mean: float,
    variance: float,
    target_power: float = 0.8,
    settings: StatsSettings = StatsSettings(),
) -> int | None:
    """Units per variant needed to reach ``target_power`` for a relative lift ``mde``."""
    raise NotImplementedError


def running_time(
    mde: float,
    mean: float,
    variance: float,
    weekly_users: float,
    variants: int = 2,
    target_power: float = 0.8,
    settings: StatsSettings = StatsSettings(),
    max_weeks: int = 52,
) -> int | None:
    """First week whose cumulative users (split over ``variants``) give power ≥ target; None if > max_weeks."""
    raise NotImplementedError


def winsorize_threshold(
    values: list[float], percentile: float, ignore_zeros: bool = False
) -> float:
    """Upper cap = the ``percentile`` (0<P<1) of the pooled per-unit values."""
    raise NotImplementedError


__all__ = [
    "MetricStats",
    "StatsSettings",
    "Comparison",
    "SRMResult",
    "DataError",
    "compare",
    "srm_test",
    "holm",
    "benjamini_hochberg",
    "adjusted_ci",
    "power",
    "minimum_detectable_effect",
    "sample_size",
    "running_time",
    "winsorize_threshold",
]
