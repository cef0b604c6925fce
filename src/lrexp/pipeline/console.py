"""What a run prints: progress lines while it trains, its summary, and a sweep job's one line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from lrexp.config import Config
from lrexp.core import fit
from lrexp.pipeline.job import SweepJob, run_name
from lrexp.pipeline.outcome import Outcome
from lrexp.pipeline.prepare import Prepared
from lrexp.report import text
from lrexp.tracking import hooks
from lrexp.tracking.store import resolve_uri

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
