"""The MLflow metric keys of a run's curves and per-fold summaries: one mapping, for the writer
and every reader.

The MLflow UI groups a run's charts into sections by the key minus its last ``/`` part, named
sections first, alphabetically, then unprefixed keys. So the curves are prefixed by what they
show and the summaries stay unprefixed::

    loss/train_mse  loss/test_mse  loss/train_tsse     the loss curves (first section)
    model/bias  model/theta_1 … model/theta_M          θ's trajectory
    optimizer/lr  optimizer/grad_norm                  the optimizer's state
    per_fold/fold_k/loss/train_mse …                   each fold's curves (CV runs)
    per_fold/fold_k/final_test_mse …                   each fold's summary metrics
    final_test_mse  gap_theta  cv_test_mse_mean …      summaries (section "Model metrics")

Inside lrexp (the curve dicts, ``history.csv``, the core) the names stay unprefixed.
"""

from __future__ import annotations

import re

LOSS = ("train_mse", "test_mse", "train_tsse")
OPTIMIZER = ("lr", "grad_norm")
_FOLD = re.compile(r"^fold_(\d+)/(.+)$")


def curve_key(name: str) -> str:
    """The MLflow key of curve ``name`` (``train_mse`` → ``loss/train_mse``; ``fold_2/bias`` →
    ``per_fold/fold_2/model/bias``)."""
    fold = _FOLD.match(name)
    if fold:
        return f"per_fold/fold_{fold[1]}/{curve_key(fold[2])}"
    if name in LOSS:
        return f"loss/{name}"
    if name in OPTIMIZER:
        return f"optimizer/{name}"
    if name == "bias" or re.fullmatch(r"theta_\d+", name):
        return f"model/{name}"
    return name


def summary_key(name: str) -> str:
    """The MLflow key of summary metric ``name``: a fold's under ``per_fold/``, others as is."""
    return f"per_fold/{name}" if _FOLD.match(name) else name


def fold_key(k: int, name: str) -> str:
    """The MLflow key of fold ``k``'s summary metric ``name`` (``per_fold/fold_k/name``)."""
    return summary_key(f"fold_{k}/{name}")
