"""Experiment statistics engine: pure functions over sufficient statistics (no I/O, no randomness).

Public API (stable; the experiments service codes against it):

- :class:`MetricStats`, :class:`StatsSettings`, :class:`Comparison`, :class:`SRMResult`
- :func:`compare` — treatment vs control (frequentist Welch / sequential, or Bayesian; CUPED; ratio metrics)
- :func:`compare_stratified` — the same with post-stratification over (control, treatment) rows per stratum
- :func:`srm_test` — sample-ratio-mismatch χ² test
- :func:`holm`, :func:`benjamini_hochberg`, :func:`adjusted_ci` — multiple-comparison corrections
- :func:`chance_to_win_from_ci` — guardrail "safe" check for frequentist results (CTW > 0.95)
- :func:`power`, :func:`minimum_detectable_effect`, :func:`sample_size`, :func:`running_time`,
  :func:`metric_mean_variance`
- :func:`winsorize_threshold`, :func:`cap` — the percentile cap (the service caps in SQL; this is the reference)

Formulas and defaults: docs/experiments-statistics.md.
"""

from __future__ import annotations

from .base import Comparison, DataError, MetricStats, StatsSettings
from .capping import cap, winsorize_threshold
from .corrections import adjusted_ci, benjamini_hochberg, holm
from .engine import compare, compare_stratified, estimate_effect
from .frequentist import chance_to_win_from_ci
from .power import (
    metric_mean_variance,
    minimum_detectable_effect,
    power,
    running_time,
    sample_size,
)
from .srm import SRM_THRESHOLD, SRMResult, srm_test

__all__ = [
    "SRM_THRESHOLD",
    "Comparison",
    "DataError",
    "MetricStats",
    "SRMResult",
    "StatsSettings",
    "adjusted_ci",
    "benjamini_hochberg",
    "cap",
    "chance_to_win_from_ci",
    "compare",
    "compare_stratified",
    "estimate_effect",
    "holm",
    "metric_mean_variance",
    "minimum_detectable_effect",
    "power",
    "running_time",
    "sample_size",
    "srm_test",
    "winsorize_threshold",
]
