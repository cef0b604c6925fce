"""One run, top to bottom: prepare → train every split → score → record, and its summary.

Importable and free of Hydra's entry point: ``lrexp.train`` (the CLI), the batched launcher, the
reproduce command and the benchmark all call :func:`run` or its steps.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from lrexp.config import Config
from lrexp.core import data, fit, optim, results, verdict
from lrexp.pipeline.outcome import Outcome
from lrexp.pipeline.prepare import Prepared, prepare
from lrexp.report import text
from lrexp.tracking import hooks, signals
from lrexp.tracking.store import resolve_uri

if TYPE_CHECKING:
    from lrexp.pipeline.job import SweepJob

PROGRESS_AFTER_S = 2.0  # runs shorter than this print no progress lines


def progress(line: Callable[[int, fit.History], str], file=None):
    """An ``on_chunk`` callback printing ``line(epochs_done, rows)`` once a run has taken
    PROGRESS_AFTER_S, then at most once a second (the loop calls back every ~0.1 s), to ``file``
    (default: stderr)."""
    start = time.perf_counter()
    last = [start]

    def on_chunk(epochs_done: int, rows: fit.History) -> None:
        hooks.pause_at("training")  # a test hook (lrexp.tracking.hooks); nothing when unset
        now = time.perf_counter()
        if now - start > PROGRESS_AFTER_S and now - last[0] >= 1.0:
            last[0] = now
            print(line(epochs_done, rows), file=file or sys.stderr, flush=True)

    return on_chunk


def _progress(total: int, fold: str, y_scale: float = 1.0):
    """Progress lines; ``y_scale`` (σ_y) turns the loop's MSEs into the target's units."""

    def mse(v) -> float:
        with np.errstate(over="ignore"):
            return float(np.float64(v) * y_scale * y_scale)

    return progress(
        lambda done, rows: (
            f"  {fold}epoch {done}/{total}  train MSE {mse(rows.train_mse[-1]):.6g}  "
            f"test MSE {mse(rows.test_mse[-1]):.6g}"
        )
    )


def run_name(cfg: Config, overrides: list[str]) -> str:
    """The MLflow run name: the configured one, else the overrides, else optimizer-data."""
    from lrexp.pipeline.job import describe

    return cfg.tracking.run_name or describe(overrides) or f"{cfg.optimizer.name}-{cfg.data.name}"


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
    from lrexp.pipeline import record  # deferred: what it records needs the tracking layer

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
    from lrexp.pipeline import record

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
    from lrexp.pipeline import record

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


def print_summary(p: Prepared, outcome: Outcome, job: str | None = None) -> None:
    """Print the run's terminal summary, with the command that opens its store in the UI.

    A sweep's job (``job``: its number and name, ``#3 optimizer=adam``) prints one line: the
    sweep prints its own summary, and the UI's command, once.
    """
    if job is not None:
        print(job_line(job, outcome), flush=True)
        return
    ui = None
    if outcome.run_id is not None:
        from lrexp.tracking import client, ui_app

        uri = resolve_uri(p.cfg.tracking.uri, p.base_dir)
        try:
            exp_id = client.calls().run_experiment_id(uri, outcome.run_id)
        except Exception:  # the store went away: the home page still lists the experiment
            exp_id = None
        ui = ui_app.ui_hint(uri, exp_id).replace("\n", "\n" + " " * len("  open the UI: "))
    print(
        text.summary_text(
            title=p.title,
            summary=outcome.summary,
            names=outcome.names,
            theta=outcome.theta,
            theta_star=outcome.theta_star,
            true_theta=outcome.dataset.true_theta,
            folds=len(outcome.folds),
            sequential=p.sequential,
            run_id=outcome.run_id,
            ui_command=ui,
            verdict=outcome.verdict,
        ),
        flush=True,
    )


def job_line(job: str, outcome: Outcome) -> str:
    """A sweep job's one line: its number and name, test MSE, whether it converged, its run."""
    judged = outcome.verdict
    state = "" if judged is None else ("  converged" if judged.converged else "  NOT converged")
    run = "" if outcome.run_id is None else f"  (MLflow run {outcome.run_id})"
    return f"  {job}: test MSE {outcome.objective:.6g}{state}{run}"


def job_label(sweep: SweepJob | None, cfg: Config, overrides: list[str]) -> str | None:
    """How a sweep's job is named in its one line (None: not a sweep's job)."""
    if sweep is None:
        return None
    return f"#{sweep.job_num} {run_name(cfg, sweep.varying(overrides))}"
