"""What a run records in MLflow: its inputs when it starts, its outputs when training returns.

Builds plain values (dicts, arrays, figures) from the run and hands them to the tracking layer's
calls (:func:`lrexp.tracking.client.calls`: the tracking process, or this process).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lrexp.config import Config, ConfigError, render
from lrexp.core import results
from lrexp.pipeline import provenance
from lrexp.report import plots
from lrexp.tracking import client, hooks, store

if TYPE_CHECKING:
    from lrexp.pipeline.job import SweepJob
    from lrexp.pipeline.outcome import Outcome
    from lrexp.pipeline.prepare import Prepared


def resolve_run_id(run_id: str) -> str:
    """The id of the run that :func:`start` yielded: a tracking process makes the run while
    this process trains, and yields a stand-in for its id until then."""
    t = client.current()
    return run_id if t is None else t.resolve(run_id)


def config_hash(cfg: Config, *, without: tuple[str, ...] = ()) -> str:
    """A short hash of everything in ``cfg`` that shapes the result (tracking settings aside)."""
    d = asdict(
        cfg
    )  # the same JSON as OmegaConf.to_container(OmegaConf.structured(cfg)), 80x faster
    d.pop("tracking")
    for dotted in without:
        group, key = dotted.split(".")
        d[group].pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def start(
    cfg: Config, base_dir: Path, name: str, overrides: list[str], sweep: SweepJob | None = None
) -> AbstractContextManager[str]:
    """Open the MLflow run for ``cfg`` (the store resolved in ``base_dir``) with provenance tags.

    In a sweep the run is the child of the sweep's parent run, in the experiment the sweep made.
    """
    tracking = client.calls()
    uri = store.resolve_uri(cfg.tracking.uri, base_dir)
    problem = store.problem(uri)
    if problem is not None:
        raise ConfigError("tracking.uri", cfg.tracking.uri, problem)
    problem = store.experiment_problem(uri, None if sweep else cfg.tracking.experiment)
    if problem is not None:
        raise ConfigError("tracking.experiment", cfg.tracking.experiment, problem)
    tags = provenance.tags(cfg.train.dtype)
    tags.update(
        {
            "lrexp.config_hash": config_hash(cfg),
            "lrexp.config_hash_noseed": config_hash(cfg, without=("train.seed",)),
            "lrexp.overrides": ",".join(overrides),
            "lrexp.base_dir": str(base_dir),  # where relative paths (data.path) were resolved
        }
    )
    exp_id = None
    if sweep is not None:
        exp_id = sweep.experiment_id
        tags.update(
            {"mlflow.parentRunId": sweep.parent_run_id, "lrexp.job_num": str(sweep.job_num)}
        )
    return tracking.run(uri, cfg.tracking.experiment, name, tags, exp_id=exp_id)


def find_finished(p: Prepared) -> dict | None:
    """A FINISHED run of this experiment with the same config hash, if there is one."""
    tracking = client.calls()
    uri = store.resolve_uri(p.cfg.tracking.uri, p.base_dir)
    return tracking.find_finished(
        uri, p.cfg.tracking.experiment, "lrexp.config_hash", config_hash(p.cfg)
    )


def record_skipped(
    p: Prepared, name: str, overrides: list[str], sweep: SweepJob | None, done: dict
) -> str | None:
    """In a sweep, a FINISHED child pointing at the earlier run, with its summary metrics."""
    tracking = client.calls()
    if sweep is None:
        return None
    original = done["tags"].get("lrexp.skipped_for", done["run_id"])
    with start(p.cfg, p.base_dir, name, overrides, sweep) as run_id:
        tracking.set_tags(
            store.resolve_uri(p.cfg.tracking.uri, p.base_dir),
            run_id,
            {"lrexp.skipped_for": original},
        )
        tracking.log_metrics(run_id, {}, done["metrics"])
    return run_id


def log_inputs(p: Prepared, overrides: list[str]) -> None:
    """Params (the resolved config, flattened), the config files, and the data set."""
    tracking = client.calls()
    params, files = inputs(p, overrides)
    tracking.log_params(params)
    hooks.pause_at("params")
    tracking.log_files(tracking.active_run_id(), files)
    log_dataset(p)


def inputs(p: Prepared, overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The run's params (its resolved config, flattened, and the shape of the run) and its config
    files (the resolved config and the command line's overrides, as YAML)."""
    ds, spec = p.dataset, p.spec
    n_train, n_test = len(p.parts[0][0]), len(p.parts[0][1])
    params = {
        **render.params(p.cfg),
        "run.batch_size": spec.batch_size,
        "run.epochs": spec.epochs,
        "run.steps_per_epoch": spec.steps_per_epoch(n_train),
        "run.n_rows": len(ds.y),
        "run.n_features": ds.X.shape[1],
        "run.n_train": n_train,
        "run.n_test": n_test,
    }
    return params, render.files(p.cfg, overrides)


def log_dataset(p: Prepared) -> None:
    ds = p.dataset
    client.calls().log_dataset(
        ds.X, ds.y, features=ds.feature_names, target=ds.target_name, name=ds.name, source=ds.source
    )


def sample_steps(curves: dict[str, np.ndarray], max_points: int) -> np.ndarray:
    """At most ``max_points`` epochs, evenly spaced, always with the first, the last and the
    best (lowest test and train MSE) at their true epochs."""
    rows = max((len(c) for c in curves.values()), default=0)
    if rows <= max_points:
        return np.arange(rows)
    keep = []
    for key in ("test_mse", "train_mse"):
        c = np.asarray(curves.get(key, []), dtype=np.float64)
        if np.isfinite(c).any():
            keep.append(int(np.nanargmin(np.where(np.isfinite(c), c, np.nan))))
    keep = sorted(set(keep) - {0, rows - 1})
    spaced = np.linspace(0, rows - 1, max_points - len(keep)).round().astype(int)
    return np.unique(np.concatenate([spaced, keep]).astype(int))


def history_csv(curves: dict[str, np.ndarray]) -> str:
    """Every curve at every epoch as CSV (``epoch`` first); shorter fold curves end early."""
    rows = max((len(c) for c in curves.values()), default=0)
    table = np.full((rows, len(curves) + 1), np.nan)
    table[:, 0] = np.arange(rows)
    for j, c in enumerate(curves.values(), start=1):
        table[: len(c), j] = c
    out = io.StringIO()
    out.write(",".join(["epoch", *curves]) + "\n")
    np.savetxt(out, table, delimiter=",", fmt="%.9g")
    return out.getvalue().replace("nan", "")


def log_curves(
    run_id: str,
    curves: dict[str, np.ndarray],
    scalars: dict,
    max_points: int,
    model_id: str | None = None,
    params: Mapping[str, Any] = {},
) -> None:
    """Curves at their epochs, sampled to ``max_points`` each, the summary scalars (linked to
    the logged model, where there is one) and ``params``, in as few requests as MLflow allows."""
    tracking = client.calls()
    steps = sample_steps(curves, max_points)
    # A fold that stopped early has a shorter curve: it takes the sampled epochs it reached.
    sampled = {k: np.asarray(v)[steps[steps < len(v)]] for k, v in curves.items()}
    tracking.log_batch(
        run_id, curves=sampled, steps=steps, scalars=scalars, params=params, model_id=model_id
    )


def log_partial(p: Prepared, run_id: str, fits: list) -> None:
    """The curves of an interrupted run, up to its last finished chunk."""
    tracking = client.calls()
    curves = results.curves(p.evaluate(fits), results.theta_names(p.dataset.X.shape[1]))
    log_curves(run_id, curves, {}, p.cfg.tracking.max_curve_points)
    tracking.log_files(run_id, {"history.csv": history_csv(curves)})


def example_rows(p: Prepared) -> list[list[float]]:
    """The model's input example: the first rows of the data, as plain floats."""
    return np.asarray(p.dataset.X[:5], dtype=np.float64).tolist()


def logs_model(cfg: Config, sweep: SweepJob | None) -> bool:
    """Whether the run logs its model now: a sweep's child does only with sweep_model=every (with
    ``best``, the sweep's end logs the best child's)."""
    return cfg.tracking.log_model and (sweep is None or cfg.tracking.sweep_model == "every")


def log_outputs(
    p: Prepared,
    outcome: Outcome,
    sweep: SweepJob | None = None,
    *,
    params: Mapping[str, Any] = {},
    files: Mapping[str, str] = {},
) -> None:
    """The curves; then θ, the full history and the figures as one copy of artifacts; then the
    model (the slow part) at the last epoch; then the summary metrics, linked to the model.

    Each is sent before the next begins, so a fault (a signal, a full disk) in a later one keeps
    what the earlier ones stored. MLflow links to a new model the metrics already logged at its
    step: the curves' values at the last epoch, the model's own. ``params`` and ``files`` go in
    the same requests (a run logged after its training: its inputs too, see :func:`inputs`)."""
    tracking = client.calls()
    ds, folds, names = outcome.dataset, outcome.folds, outcome.names
    t = p.cfg.tracking
    curves = results.curves(folds, names)
    log_curves(outcome.run_id, curves, {}, t.max_curve_points, None, params)
    hooks.pause_at("curves")
    tracking.log_files(outcome.run_id, {**files, **output_files(p, outcome, curves)})
    hooks.pause_at("artifacts")
    model_id = None
    if logs_model(p.cfg, sweep):
        last = max((len(c) for c in curves.values()), default=1) - 1
        model_id = tracking.log_model(
            outcome.theta, list(ds.feature_names), example_rows(p), step=last
        )
    tracking.log_batch(outcome.run_id, scalars=outcome.summary, model_id=model_id)
    hooks.pause_at("end")


def output_files(p: Prepared, outcome: Outcome, curves: dict[str, np.ndarray]) -> dict[str, str]:
    """θ (``theta.json``), every curve at every epoch (``history.csv``) and the figures."""
    ds, folds, names = outcome.dataset, outcome.folds, outcome.names
    theta = {
        "names": names,
        "theta": outcome.theta.tolist(),
        "theta_star": outcome.theta_star.tolist(),
        "theta_true": None if ds.true_theta is None else ds.true_theta.tolist(),
        "folds": [{"theta": f.theta.tolist(), "theta_star": f.theta_star.tolist()} for f in folds],
        "features": list(ds.feature_names),  # with "example": what a model of θ needs
        "example": example_rows(p),
    }
    optimal = float(np.mean([f.optimum["mse"] for f in folds]))
    tr, te = p.parts[0]
    w = folds[0].theta

    def fitted(rows):
        return w[0] + np.asarray(ds.X[rows], dtype=np.float64) @ w[1:]

    return {
        "theta.json": json.dumps(theta, indent=2),
        "history.csv": history_csv(curves),
        "plots/loss_curve.svg": plots.loss_curve(curves, optimal, len(folds), p.title),
        "plots/fitted_vs_actual.svg": plots.fitted_vs_actual(
            ds.y[tr], fitted(tr), ds.y[te], fitted(te), ds.target_name
        ),
    }
