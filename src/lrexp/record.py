"""What a run records in MLflow: its inputs when it starts, its outputs when training returns.

Builds plain values (dicts, arrays, figures) from the run and hands them to :mod:`lrexp.tracking`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from lrexp import plots, provenance, results, tracking
from lrexp.config import Config
from lrexp.data import Dataset
from lrexp.fit import LoopSpec
from lrexp.model import predict


def start(cfg: Config, base_dir: Path, name: str) -> AbstractContextManager[str]:
    """Open the MLflow run for ``cfg`` (the store resolved in ``base_dir``) with provenance tags."""
    uri = tracking.resolve_uri(cfg.tracking.uri, base_dir)
    return tracking.run(uri, cfg.tracking.experiment, name, provenance.tags(cfg.train.dtype))


def log_inputs(
    cfg: Config,
    ds: Dataset,
    spec: LoopSpec,
    overrides: list[str],
    parts: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """Params (the resolved config, flattened), the config files, and the data set."""
    resolved = OmegaConf.structured(cfg)
    n_train, n_test = len(parts[0][0]), len(parts[0][1])
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


def log_outputs(
    outcome, parts: list[tuple[np.ndarray, np.ndarray]], title: str, *, log_model: bool = True
) -> None:
    """Curves and summary metrics in batches, θ as JSON, the plots, and the pyfunc model."""
    ds, folds, names = outcome.dataset, outcome.folds, outcome.names
    curves = results.curves(folds, names)
    tracking.log_metrics(outcome.run_id, curves, outcome.summary)
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
    fig = plots.loss_curve(curves, optimal, len(folds), title)
    tracking.log_figure(fig, "plots/loss_curve.png")
    plots.close(fig)
    tr, te = parts[0]
    theta = folds[0].theta

    def fitted(rows):
        return np.asarray(predict(theta, ds.X[rows]))

    fig = plots.fitted_vs_actual(ds.y[tr], fitted(tr), ds.y[te], fitted(te), ds.target_name)
    tracking.log_figure(fig, "plots/fitted_vs_actual.png")
    plots.close(fig)
    if log_model:
        example = pd.DataFrame(ds.X[:5], columns=list(ds.feature_names))
        tracking.log_model(outcome.theta, ds.feature_names, example)
