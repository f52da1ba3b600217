"""Outlier capping (winsorization). The service caps in SQL; this is the reference definition.

Cap = the P-th percentile (0 < P < 1, linear interpolation) of the per-unit *aggregated* values pooled over
all variants (optionally ignoring zeros); every per-unit value x becomes min(x, cap) before S, Q and the
cross products are computed.
"""

from __future__ import annotations

import numpy as np


def winsorize_threshold(values: list[float], percentile: float, ignore_zeros: bool = False) -> float:
    if not 0 < percentile < 1:
        raise ValueError("percentile must be in (0, 1)")
    arr = np.asarray(values, dtype=float)
    if ignore_zeros:
        arr = arr[arr != 0]
    if arr.size == 0:
        return 0.0
    return float(np.quantile(arr, percentile))


def cap(values: list[float], threshold: float) -> list[float]:
    """min(x, cap) per unit (upper cap only)."""
    return [min(v, threshold) for v in values]
