"""What a run produced (:class:`Outcome`), and how a diverged run fails (:class:`Diverged`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrexp.core import diagnostics, results
from lrexp.core.data import Dataset
from lrexp.core.objective import objective
from lrexp.core.verdict import Verdict


class Diverged(RuntimeError):
    """Training left θ non-finite; the run keeps the last finite θ and the curve up to there."""

    def __init__(self, step: int, fold: int | None, advice: str):
        where = f" (fold {fold})" if fold is not None else ""
        super().__init__(f"diverged at step {step}{where}: {advice}")


def advice(
    checks: diagnostics.Diagnostics,
    *,
    lr: float,
    dtype: str,
    largest: float,
    rows: int,
    standardized: bool,
    mini_batches: bool,
) -> str:
    """What to do about a diverged run: rescale data that overflows ``dtype`` (values up to
    ``largest``, over ``rows`` rows, as the loop takes them), else lower the learning rate below
    the optimizer's own bound where its registry entry gives one (a bound from the full batch's
    curvature: a run below it can still diverge on the noisier curvature of small mini-batches).
    """
    digits = 2 * math.log10(largest) + math.log10(rows) if largest > 0 else -math.inf
    if digits > math.log10(np.finfo(dtype).max):  # Σ value² passes the dtype's largest number
        fixes = []
        if dtype != "float64" and digits < math.log10(np.finfo(np.float64).max):
            fixes.append("use train.dtype=float64")
        if not standardized:
            fixes.append("standardize it (data.standardize=true data.standardize_target=true)")
        fixes.append("rescale the data")
        return (
            f"the data overflows {dtype}: values up to {largest:.3g} over {rows} rows, whose "
            f"squares sum past {dtype}'s largest number ({np.finfo(dtype).max:.3g}): "
            + ", or ".join(fixes)
        )
    if checks.optimizer_stable_lr is None:
        return f"lower optimizer.lr={lr:g}"
    if lr < checks.optimizer_stable_lr and mini_batches:
        return (
            f"lower optimizer.lr={lr:g} ({checks.bound} and batch size on average, but a "
            "mini-batch's curvature varies about it; on the batch mean, train.reduction=mean, "
            "a larger train.batch_size steadies it)"
        )
    return f"lower optimizer.lr={lr:g} ({checks.bound} and batch size)"


@dataclass(frozen=True)
class Outcome:
    """What a run produced: the id of its MLflow run (None with tracking off) and its results."""

    run_id: str | None
    summary: dict
    names: list[str]  # bias, theta_1..theta_M
    theta: np.ndarray  # original units; with folds, the mean of the fold models
    theta_star: np.ndarray  # least squares on the training rows (with folds: on all rows)
    folds: list[results.FoldResult]
    dataset: Dataset
    skipped_for: str | None = None  # the FINISHED run this one was skipped for
    verdict: Verdict | None = None  # converged or not, and advice (None: a skipped run)

    @property
    def objective(self) -> float:
        """What a sweeper minimizes (:func:`lrexp.core.objective.objective`)."""
        return objective(self.summary)

    def diverged(self, advice: str) -> Diverged | None:
        """The :class:`Diverged` error of the first fold that diverged, if one did, with the
        ``advice`` (:func:`advice`) of what to do about it."""
        for i, f in enumerate(self.folds):
            if f.fit.diverged_step is not None:
                fold = i + 1 if len(self.folds) > 1 else None
                return Diverged(f.fit.diverged_step, fold, advice)
        return None
