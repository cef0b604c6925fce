"""The one rule for what a run scores: the objective sweeps rank by and sweepers minimize.

Plain Python, no JAX: the tracking process (which never imports JAX) ranks a sweep's children by it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def objective(summary: Mapping[str, float | None]) -> float:
    """The test MSE, cross-validated where there are folds; NaN where a run has none."""
    value = summary.get("cv_test_mse_mean", summary.get("final_test_mse"))
    return math.nan if value is None else float(value)
