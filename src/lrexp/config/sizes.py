"""Checks of the values that depend on the data's size, and of the machine's limits they meet:
rows for the splits and batches, steps the loop can count, memory (:mod:`.limits`), and a target
whose squares float64 can sum."""

from __future__ import annotations

import math

import numpy as np

import lrexp.config.limits as limits
from lrexp.config.errors import ConfigError
from lrexp.config.limits import INT32_MAX
from lrexp.config.schema import Config, FileData
from lrexp.core import optim


def check_memory(cfg: Config, *, n_rows: int, n_features: int) -> None:
    """Refuse a run whose estimated memory (:func:`limits.estimate`) would exhaust the machine,
    naming the key that sets the largest part of it."""
    t = cfg.train
    full_batch = t.batch_size is None or optim.OPTIMIZERS[cfg.optimizer.name].line_search
    steps = full_batch and t.steps is not None  # a history row per step
    rows = t.steps if steps else t.epochs
    if cfg.tracking.log_steps and not full_batch:  # and a row per mini-batch step
        rows *= 1 + -(-n_rows // t.batch_size)
    terms = limits.estimate(
        n_rows=n_rows,
        n_features=n_features,
        splits=t.folds or 1,
        history_rows=rows,
        memory_size=getattr(cfg.optimizer, "memory_size", 0),
        itemsize=4 if t.dtype == "float32" else 8,
    )
    if (big := limits.too_big(terms)) is None:
        return
    data = ("data.path", cfg.data.path) if isinstance(cfg.data, FileData) else ("data.n", n_rows)
    keys = {
        "data": data,
        "splits": ("train.folds", t.folds),
        "history": ("train.steps", t.steps) if steps else ("train.epochs", t.epochs),
        "memory": ("optimizer.memory_size", getattr(cfg.optimizer, "memory_size", None)),
    }
    raise ConfigError(*keys[big[0]], big[1])


def check_values(cfg: Config, *, largest_target: float, n_rows: int) -> None:
    """Refuse a target whose squares sum past float64's largest number: no TSSE, MSE or R² of it
    can be computed in any dtype (and training would misreport it as divergence)."""
    limit = math.sqrt(float(np.finfo(np.float64).max) / n_rows)
    if not largest_target > limit:
        return
    msg = (
        f"the target reaches {largest_target:.3g}: over {n_rows} rows its squares sum past "
        f"float64's largest number ({np.finfo(np.float64).max:.3g}); needs |y| <= {limit:.3g}: "
        "rescale the data"
    )
    if isinstance(cfg.data, FileData):
        raise ConfigError("data.target", cfg.data.target, msg)
    d = cfg.data
    sizes = {"data.bias": abs(d.bias), "data.noise": d.noise}
    sizes["data.weights"] = max(abs(w) for w in d.weights)
    key = max(sizes, key=sizes.__getitem__)
    raise ConfigError(key, list(d.weights) if key == "data.weights" else getattr(d, key[5:]), msg)


def validate_sizes(
    cfg: Config, *, n_rows: int, n_features: int, n_train: int, largest_target: float = 0.0
) -> None:
    """Check the values that depend on the loaded data's size (and its target's largest value)."""
    if n_rows < n_features + 2:
        key, value = (
            ("data.path", cfg.data.path) if isinstance(cfg.data, FileData) else ("data.n", n_rows)
        )
        raise ConfigError(
            key,
            value,
            f"has {n_rows} rows for {n_features} features; needs at "
            f"least {n_features + 2} (the least-squares fit must be determined)",
        )
    if cfg.train.folds is not None and cfg.train.folds > n_rows:
        raise ConfigError(
            "train.folds", cfg.train.folds, f"must be <= the number of rows ({n_rows})"
        )
    if n_train < n_features + 1:
        raise ConfigError(
            "train.test_fraction" if cfg.train.folds is None else "train.folds",
            cfg.train.test_fraction if cfg.train.folds is None else cfg.train.folds,
            f"leaves {n_train} training rows; at least {n_features + 1} are needed",
        )
    if cfg.train.batch_size is not None and cfg.train.batch_size > n_train:
        raise ConfigError(
            "train.batch_size",
            cfg.train.batch_size,
            f"must be <= the number of training rows ({n_train}), or null",
        )
    _check_steps(cfg, n_train)
    check_memory(cfg, n_rows=n_rows, n_features=n_features)
    check_values(cfg, largest_target=largest_target, n_rows=n_rows)


def _check_steps(cfg: Config, n_train: int) -> None:
    """The loop counts its steps in int32: epochs × steps an epoch must fit."""
    t = cfg.train
    if t.batch_size is None or optim.OPTIMIZERS[cfg.optimizer.name].line_search:
        return  # a step an epoch: train.epochs and train.steps are in range
    per_epoch = -(-n_train // t.batch_size)
    if t.epochs * per_epoch > INT32_MAX:
        allowed = (
            f"makes {t.epochs * per_epoch} steps ({per_epoch} an epoch); the loop counts at most "
            f"{INT32_MAX}: fewer epochs, or a larger train.batch_size"
        )
        raise ConfigError("train.epochs", t.epochs, allowed)
