"""What a run produced (:class:`Outcome`), and how a diverged run fails (:class:`Diverged`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lrexp.core import results
from lrexp.core.data import Dataset
from lrexp.core.objective import objective
from lrexp.core.verdict import Verdict


class Diverged(RuntimeError):
    """Training left θ non-finite; the run keeps the last finite θ and the curve up to there."""

    def __init__(self, step: int, fold: int | None, stable_lr: float):
        where = f" (fold {fold})" if fold is not None else ""
        super().__init__(
            f"diverged at step {step}{where}: lower optimizer.lr (plain gradient "
            f"descent is stable below {stable_lr:.3g} on this data and batch size)"
        )


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

    def diverged(self, stable_lr: float) -> Diverged | None:
        """The :class:`Diverged` error of the first fold that diverged, if one did."""
        for i, f in enumerate(self.folds):
            if f.fit.diverged_step is not None:
                fold = i + 1 if len(self.folds) > 1 else None
                return Diverged(f.fit.diverged_step, fold, stable_lr)
        return None
