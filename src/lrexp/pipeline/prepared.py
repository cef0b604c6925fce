"""What a run needs before training starts (:class:`Prepared`), and the parts of preparing it
that loaded and streamed data share: the loop's shape, the hyperparameters, the sweep's cache.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lrexp.pipeline.outcome as outcome
from lrexp.config import Config
from lrexp.core import data, diagnostics, fit, optim, results
from lrexp.core.data import Dataset

log = logging.getLogger("lrexp")

# Line-search optimizers (L-BFGS) stop once the train MSE improves by at most this share of itself
# (in float32, a few units of its last place): they converge in a few dozen steps, then stall.
LINE_SEARCH_RTOL = {"float32": 1e-6, "float64": 1e-10}


@dataclass(frozen=True)
class Prepared:
    """Everything a run needs before training starts; building it checks all of the input."""

    cfg: Config
    base_dir: Path
    dataset: Dataset
    parts: list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows) of each split
    scalers: list[data.Standardizer]  # fitted on each split's training rows
    spec: fit.LoopSpec
    hyper: fit.Hyper  # split 0's (the splits differ only in ``train.tol`` in the loop's units)
    shuffle_key: jax.Array
    title: str
    checks: diagnostics.Diagnostics

    @property
    def sequential(self) -> bool:
        """Whether one model trains through the folds in turn (``train.cv=sequential``)."""
        return self.cfg.train.cv == "sequential" and len(self.parts) > 1

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Split ``i`` as the loop takes it, standardized: (X_train, y_train, X_test, y_test)."""
        (tr, te), st, ds = self.parts[i], self.scalers[i], self.dataset
        return (
            st.apply(ds.X[tr]),
            st.apply_target(ds.y[tr]),
            st.apply(ds.X[te]),
            st.apply_target(ds.y[te]),
        )

    @property
    def n_rows(self) -> int:
        """Rows of the data set (trained and tested on)."""
        return len(self.dataset.y)

    def sizes(self, i: int) -> tuple[int, int]:
        """Split ``i``'s (training rows, test rows)."""
        return len(self.parts[i][0]), len(self.parts[i][1])

    def hyper_of(self, i: int) -> fit.Hyper:
        """Split ``i``'s hyperparameters: ``train.tol`` (in the target's units, squared) in the
        units of split ``i``'s standardized target, ỹ = (y − ȳ) / σ_y."""
        tol = self.cfg.train.tol
        if tol is None:
            return self.hyper
        dtype = jnp.dtype(self.cfg.train.dtype)
        return self.hyper._replace(tol=jnp.asarray(_in_loop_units(tol, self.scalers[i]), dtype))

    def divergence_advice(self) -> str:
        """What to tell a run that diverged (:func:`outcome.advice`)."""
        X, y, X_test, y_test = self.arrays(0)
        with np.errstate(invalid="ignore"):
            largest = float(max(np.max(np.abs(a), initial=0.0) for a in (X, y, X_test, y_test)))
        d = self.cfg.data
        return outcome.advice(
            self.checks,
            lr=self.cfg.optimizer.lr,
            dtype=self.cfg.train.dtype,
            largest=largest,
            rows=len(y),
            standardized=d.standardize and d.standardize_target,
            mini_batches=self.spec.batch_size is not None,
        )

    def evaluate(self, fits: list[fit.FitResult]) -> list[results.FoldResult]:
        """Score each split's fit in original units (the splits trained so far, if fewer)."""
        ds = self.dataset
        return [
            results.evaluate(f, st, ds.X[tr], ds.y[tr], ds.X[te], ds.y[te])
            for f, st, (tr, te) in zip(fits, self.scalers, self.parts, strict=False)
        ]


def loop_spec(cfg: Config, n_train: int, n_features: int = 1) -> fit.LoopSpec:
    """The static shape of the training loop. Line-search optimizers always take full batches
    (one step an epoch: at most ``train.steps``, else ``train.epochs``), and stop once they
    converge (:data:`LINE_SEARCH_RTOL`)."""
    batch_size = cfg.train.batch_size
    if optim.OPTIMIZERS[cfg.optimizer.name].line_search and batch_size is not None:
        log.warning(
            "optimizer=%s works on the full batch: train.batch_size=%s is ignored",
            cfg.optimizer.name,
            batch_size,
        )
        batch_size = None
    epochs = cfg.train.steps if (batch_size is None and cfg.train.steps) else cfg.train.epochs
    spec = fit.LoopSpec(
        optimizer=cfg.optimizer.name,
        schedule=cfg.schedule.name,
        optimizer_static=optim.split_knobs(asdict(cfg.optimizer))[1],
        schedule_static=optim.split_knobs(asdict(cfg.schedule))[1],
        batch_size=batch_size,
        epochs=epochs,
        stats=batch_size is None and cfg.train.sufficient_stats,
        block=cfg.train.shuffle_block if batch_size is not None else 1,
        log_steps=cfg.tracking.log_steps,
        reduction=cfg.train.reduction,
    )
    return fit.chunked(spec, n_train, n_features)  # compiled calls of a fraction of a second


def hyper_for(cfg: Config, scaler: data.Standardizer) -> fit.Hyper:
    """The loop's float hyperparameters, ``train.tol`` in the units of ``scaler``'s target."""
    t = cfg.train
    floats = optim.split_knobs(asdict(cfg.optimizer))[0]
    schedule_floats = optim.split_knobs(asdict(cfg.schedule))[0]
    rtol = LINE_SEARCH_RTOL[t.dtype] if optim.OPTIMIZERS[cfg.optimizer.name].line_search else None
    tol = None if t.tol is None else _in_loop_units(t.tol, scaler)
    return fit.make_hyper(floats, schedule_floats, tol, jnp.dtype(t.dtype), rtol=rtol)


def _once(cache: dict, key: tuple, make, *args):
    """``make(*args)``, once per ``key`` in ``cache`` (a sweep's jobs share their data)."""
    key = repr(key)
    if key not in cache:
        cache[key] = make(*args)
    return cache[key]


def _in_loop_units(tol: float, st: data.Standardizer) -> float:
    """``train.tol``, an improvement of the MSE in the target's units², on ỹ = (y − ȳ) / σ_y."""
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float64(tol) / np.float64(st.y_scale) / np.float64(st.y_scale))


def checked(cfg: Config, spread, spec, scaler, *, name: str, rows: int, m: int, how: str = ""):
    """A run's pre-training diagnostics (each warning logged), its hyperparameters and the title
    it prints: ``(checks, hyper, title)``; ``how`` qualifies the data (``", streamed"``)."""
    floats = optim.split_knobs(asdict(cfg.optimizer))[0]
    checks = diagnostics.check(
        spread, batch_size=spec.batch_size, optimizer=cfg.optimizer.name, knobs=floats,
        dtype=cfg.train.dtype, reduction=spec.reduction,
    )  # fmt: skip
    for warning in checks.warnings:
        log.warning(warning)
    batch = "full batch" if spec.batch_size is None else f"batch {spec.batch_size}"
    title = (
        f"lrexp: {cfg.optimizer.name} (lr {cfg.optimizer.lr:g}, {cfg.schedule.name}) on "
        f"{name} [{rows} rows × {m} features{how}], {batch}, {cfg.train.dtype}"
    )
    return checks, hyper_for(cfg, scaler), title
