"""One run, top to bottom: prepare → train every split → score → record, and its summary.

Importable and free of Hydra's entry point: ``lrexp.train`` (the CLI), the batched launcher, the
reproduce command and the benchmark all call :func:`run` or its steps.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from lrexp.config import Config
from lrexp.core import data, fit, optim, results, verdict
from lrexp.pipeline.console import (  # noqa: F401  (re-exported: its users import them from here)
    PROGRESS_AFTER_S,
    _progress,
    job_label,
    job_line,
    print_summary,
)
from lrexp.pipeline.job import run_name
from lrexp.pipeline.outcome import Outcome
from lrexp.pipeline.prepare import Prepared, prepare
from lrexp.tracking import signals

if TYPE_CHECKING:
    from lrexp.pipeline.job import SweepJob


def start_theta(p: Prepared, i: int, fits: list[fit.FitResult]) -> np.ndarray | None:
    """Where split ``i`` starts training: from zeros (None), or, in sequential CV, from the
    previous fold's final θ̃, carried in original units into split ``i``'s standardization
    (each split has its own scaler)."""
    if not p.sequential or i == 0:
        return None
    theta = p.scalers[i - 1].to_original(fits[i - 1].theta)
    return p.scalers[i].to_standardized(theta)


def train_folds(p: Prepared, *, progress: bool = True) -> list[fit.FitResult]:
    """Train on every split, one after the other, reusing one compiled program: each from zeros,
    or, in sequential CV, each fold from where the previous one ended (:func:`start_theta`).

    Interrupted (Ctrl-C, SIGTERM), the exception carries ``partial_fits``: the splits trained so
    far and the one in progress, up to its last finished chunk.
    """
    fits: list[fit.FitResult] = []
    for i in range(len(p.parts)):
        label = f"fold {i + 1}/{len(p.parts)}: " if len(p.parts) > 1 else ""
        try:
            fits.append(
                fit.fit(
                    *p.arrays(i),
                    spec=p.spec,
                    hyper=p.hyper_of(i),
                    key=jax.random.fold_in(p.shuffle_key, i),
                    dtype=jnp.dtype(p.cfg.train.dtype),
                    on_chunk=(
                        _progress(p.spec.epochs, label, p.scalers[i].y_scale) if progress else None
                    ),
                    theta0=start_theta(p, i, fits),
                )
            )
        except BaseException as e:
            e.partial_fits = [*fits, *([e.partial_fit] if hasattr(e, "partial_fit") else [])]
            raise
    return fits


def conclude(p: Prepared, fits: list[fit.FitResult], run_id: str | None) -> Outcome:
    """Score the fits in original units and summarize them. The run's θ is the mean of the fold
    models, or in sequential CV the one model's: the last fold's."""
    ds = p.dataset
    folds = p.evaluate(fits)
    theta = folds[-1].theta if p.sequential else np.mean([f.theta for f in folds], axis=0)
    if len(folds) == 1:
        theta_star = folds[0].theta_star
    else:
        everything = data.Standardizer.fit(ds.X, ds.feature_names, enabled=p.cfg.data.standardize)
        theta_star = results.optimum(everything, ds.X, ds.y)
    names = results.theta_names(ds.X.shape[1])
    summary = results.summary(folds, ds.true_theta)
    summary.update(stable_lr_gd=p.checks.stable_lr, hessian_condition=p.checks.hessian_condition)
    if p.sequential:  # one model: its epochs and steps are those of all folds together
        summary.update(
            epochs_run=float(sum(f.fit.epochs_run for f in folds)),
            steps_run=float(sum(f.fit.steps for f in folds)),
        )
    judged = verdict.judge(
        summary,
        [f.fit.history.train_mse for f in folds],
        verdict_facts(p),
        diverged=any(f.fit.diverged_step is not None for f in folds),
    )
    return Outcome(run_id, summary, names, theta, theta_star, folds, ds, verdict=judged)


def verdict_facts(p: Prepared) -> verdict.Facts:
    """What the verdict's advice needs to know of how the run trained."""
    cfg = p.cfg
    stretch = optim.OPTIMIZERS[cfg.optimizer.name].stable_factor  # None: not lr × gradient
    factor = stretch(optim.split_knobs(asdict(cfg.optimizer))[0]) if stretch else None
    steps = p.spec.batch_size is None and cfg.train.steps
    return verdict.Facts(
        optimizer=cfg.optimizer.name,
        lr=cfg.optimizer.lr,
        epochs=p.spec.epochs,
        epochs_key="train.steps" if steps else "train.epochs",
        stable_lr=None if factor is None else p.checks.stable_lr * factor,
        tol=cfg.train.tol,
    )


def tracked(
    p: Prepared, overrides: list[str], sweep: SweepJob | None = None
) -> AbstractContextManager[str | None]:
    """The context of the run's MLflow run: yields its id, or None with tracking off."""
    if not p.cfg.tracking.enabled:
        return contextlib.nullcontext(None)
    import lrexp.pipeline.record as record  # deferred: what it records needs the tracking layer

    name = run_name(p.cfg, overrides if sweep is None else sweep.varying(overrides))
    return record.start(p.cfg, p.base_dir, name, overrides, sweep)


def run(
    cfg: Config,
    *,
    base_dir: str | Path = ".",
    overrides: list[str] | None = None,
    sweep: SweepJob | None = None,
) -> Outcome:
    """Validate, load data, train on every split, log the run to MLflow; return the outcome."""
    overrides = list(overrides or [])
    p = prepare(cfg, base_dir)
    if cfg.tracking.enabled and cfg.tracking.skip_finished:
        skipped = skip_if_finished(p, overrides, sweep)
        if skipped is not None:
            return skipped
    import lrexp.pipeline.record as record

    with tracked(p, overrides, sweep) as run_id:
        if run_id is not None:
            record.log_inputs(p, overrides)
        try:
            fits = train_folds(p)
        except BaseException as e:  # keep the curve up to the interruption
            if run_id is not None and getattr(e, "partial_fits", None):
                signals.seen(e)  # this stop request is being honoured: the writes below go out
                record.log_partial(p, run_id, e.partial_fits)
            raise
        if run_id is not None:
            run_id = record.resolve_run_id(run_id)
        outcome = conclude(p, fits, run_id)
        if run_id is not None:
            record.log_outputs(p, outcome, sweep)
        raise_if_diverged(p, outcome, sweep)  # inside the run: it ends FAILED with this reason
    print_summary(p, outcome, job_label(sweep, cfg, overrides))
    return outcome


def raise_if_diverged(p: Prepared, outcome: Outcome, sweep: SweepJob | None = None) -> None:
    """Raise :class:`~lrexp.pipeline.outcome.Diverged` if a fold did, after the summary (a
    sweep's job prints none: its error line says it diverged)."""
    error = outcome.diverged(p.divergence_advice())
    if error is not None:
        if sweep is None:
            print_summary(p, outcome)
        raise error


def skip_if_finished(p: Prepared, overrides: list[str], sweep: SweepJob | None) -> Outcome | None:
    """The outcome of a FINISHED run with this config (``tracking.skip_finished``), if any."""
    import lrexp.pipeline.record as record

    done = record.find_finished(p)
    if done is None:
        return None
    name = run_name(p.cfg, overrides if sweep is None else sweep.varying(overrides))
    run_id = record.record_skipped(p, name, overrides, sweep, done)
    empty = np.empty(0)
    outcome = Outcome(
        run_id, done["metrics"], [], empty, empty, [], p.dataset, skipped_for=done["run_id"]
    )
    print(
        f"lrexp: skipped: this config already FINISHED as run {done['run_id']} "
        f"({done['name']}); test MSE {outcome.objective:.6g}",
        flush=True,
    )
    return outcome
