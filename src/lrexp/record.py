"""What a run records in MLflow: its inputs when it starts, its outputs when training returns.

Builds plain values (dicts, arrays, figures) from the run and hands them to :mod:`lrexp.tracking`.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from lrexp import plots, provenance, results, tracking
from lrexp.config import Config, ConfigError
from lrexp.model import predict

if TYPE_CHECKING:
    from lrexp.sweep import SweepJob
    from lrexp.train import Outcome, Prepared


def config_hash(cfg: Config, *, without: tuple[str, ...] = ()) -> str:
    """A short hash of everything in ``cfg`` that shapes the result (tracking settings aside)."""
    d = OmegaConf.to_container(OmegaConf.structured(cfg))
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
    uri = tracking.resolve_uri(cfg.tracking.uri, base_dir)
    unreachable = tracking.check_server(uri)
    if unreachable is not None:
        raise ConfigError(
            "tracking.uri",
            cfg.tracking.uri,
            f"{unreachable}; start the server, "
            "or track locally with tracking.uri=sqlite:///mlflow.db",
        )
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
    uri = tracking.resolve_uri(p.cfg.tracking.uri, p.base_dir)
    return tracking.find_finished(
        uri, p.cfg.tracking.experiment, "lrexp.config_hash", config_hash(p.cfg)
    )


def record_skipped(
    p: Prepared, name: str, overrides: list[str], sweep: SweepJob | None, done: dict
) -> str | None:
    """In a sweep, a FINISHED child pointing at the earlier run, with its summary metrics."""
    if sweep is None:
        return None
    original = done["tags"].get("lrexp.skipped_for", done["run_id"])
    with start(p.cfg, p.base_dir, name, overrides, sweep) as run_id:
        tracking.set_tags(
            tracking.resolve_uri(p.cfg.tracking.uri, p.base_dir),
            run_id,
            {"lrexp.skipped_for": original},
        )
        tracking.log_metrics(run_id, {}, done["metrics"])
    return run_id


def log_inputs(p: Prepared, overrides: list[str]) -> None:
    """Params (the resolved config, flattened), the config files, and the data set."""
    ds, spec = p.dataset, p.spec
    resolved = OmegaConf.structured(p.cfg)
    n_train, n_test = len(p.parts[0][0]), len(p.parts[0][1])
    tracking.log_params(
        {
            **tracking.flatten(OmegaConf.to_container(resolved)),
            "run.batch_size": spec.batch_size,
            "run.epochs": spec.epochs,
            "run.steps_per_epoch": spec.steps_per_epoch(n_train),
            "run.n_rows": len(ds.y),
            "run.n_features": ds.X.shape[1],
            "run.n_train": n_train,
            "run.n_test": n_test,
        }
    )
    tracking.log_text(OmegaConf.to_yaml(resolved), "config/config.yaml")
    tracking.log_text(OmegaConf.to_yaml(OmegaConf.create(overrides)), "config/overrides.yaml")
    frame = pd.DataFrame(ds.X, columns=list(ds.feature_names)).assign(**{ds.target_name: ds.y})
    tracking.log_dataset(frame, name=ds.name, source=ds.source, target=ds.target_name)


MAX_CURVE_POINTS = 1000  # per curve: a long run's curve is sampled, its first and last kept


def log_curves(run_id: str, curves: dict[str, np.ndarray], scalars: dict) -> None:
    """Log curves at their epochs, at most MAX_CURVE_POINTS evenly spaced points each."""
    rows = max((len(c) for c in curves.values()), default=0)
    if rows <= MAX_CURVE_POINTS:
        tracking.log_metrics(run_id, curves, scalars)
        return
    steps = np.unique(np.linspace(0, rows - 1, MAX_CURVE_POINTS).round().astype(int))
    sampled = {k: np.asarray(v)[steps] for k, v in curves.items()}
    tracking.log_metrics(run_id, sampled, scalars, steps=steps.tolist())


def log_partial(p: Prepared, run_id: str, fits: list) -> None:
    """The curves of an interrupted run, up to its last finished chunk."""
    ds = p.dataset
    folds = [
        results.evaluate(f, st, ds.X[tr], ds.y[tr], ds.X[te], ds.y[te])
        for f, st, (tr, te) in zip(fits, p.scalers, p.parts, strict=False)
    ]
    log_curves(run_id, results.curves(folds, results.theta_names(ds.X.shape[1])), {})


def log_outputs(p: Prepared, outcome: Outcome) -> None:
    """Curves and summary metrics in batches, θ as JSON, the plots, and the pyfunc model."""
    ds, folds, names = outcome.dataset, outcome.folds, outcome.names
    curves = results.curves(folds, names)
    log_curves(outcome.run_id, curves, outcome.summary)
    tracking.log_json(
        {
            "names": names,
            "theta": outcome.theta.tolist(),
            "theta_star": outcome.theta_star.tolist(),
            "theta_true": None if ds.true_theta is None else ds.true_theta.tolist(),
            "folds": [
                {"theta": f.theta.tolist(), "theta_star": f.theta_star.tolist()} for f in folds
            ],
        },
        "theta.json",
    )
    optimal = float(np.mean([f.optimum["mse"] for f in folds]))
    fig = plots.loss_curve(curves, optimal, len(folds), p.title)
    tracking.log_figure(fig, "plots/loss_curve.png")
    plots.close(fig)
    tr, te = p.parts[0]
    theta = folds[0].theta

    def fitted(rows):
        return np.asarray(predict(theta, ds.X[rows]))

    fig = plots.fitted_vs_actual(ds.y[tr], fitted(tr), ds.y[te], fitted(te), ds.target_name)
    tracking.log_figure(fig, "plots/fitted_vs_actual.png")
    plots.close(fig)
    if p.cfg.tracking.log_model:
        example = pd.DataFrame(ds.X[:5], columns=list(ds.feature_names))
        tracking.log_model(outcome.theta, ds.feature_names, example)
