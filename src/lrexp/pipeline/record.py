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

from lrexp.config import Config, ConfigError, FileData, render
from lrexp.core import data, results
from lrexp.core.verdict import Verdict
from lrexp.pipeline import provenance
from lrexp.report import plots
from lrexp.tracking import client, metric_names, store

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
    unreachable = store.check_server(uri)
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
            {"lrexp.skipped_for": original}
            | {k: done["tags"][k] for k in VERDICT_TAGS if k in done["tags"]},
        )
        tracking.log_metrics(run_id, {}, done["metrics"])
    return run_id


def log_inputs(p: Prepared, overrides: list[str]) -> None:
    """Params (the resolved config, flattened), the config files, and the data set."""
    tracking = client.calls()
    params, files = inputs(p, overrides)
    tracking.log_params(params)
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
    if isinstance(p.cfg.data, FileData):
        params["run.dropped_rows"] = ds.dropped_rows  # data.dropna=true: rows left out
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
    tags: Mapping[str, str] = {},
) -> None:
    """Curves at their epochs, sampled to ``max_points`` each, the summary scalars (linked to
    the logged model, where there is one), ``params`` and ``tags``, in as few requests as MLflow
    allows; under the MLflow keys of :mod:`lrexp.tracking.metric_names` (``loss/train_mse``…)."""
    tracking = client.calls()
    steps = sample_steps(curves, max_points)
    # A fold that stopped early has a shorter curve: it takes the sampled epochs it reached.
    sampled = {
        metric_names.curve_key(k): np.asarray(v)[steps[steps < len(v)]] for k, v in curves.items()
    }
    scalars = {metric_names.summary_key(k): v for k, v in scalars.items()}
    tracking.log_batch(
        run_id, curves=sampled, steps=steps, scalars=scalars, params=params, tags=tags,
        model_id=model_id,
    )  # fmt: skip


def run_curves(
    p: Prepared, folds: list[results.FoldResult], names: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The run's per-epoch curves (:func:`results.curves`), and the fold of each row; in
    sequential CV, one model's curves through the folds in turn: epoch 0, then each fold's epochs
    (a fold's row 0 is the previous fold's last θ, so it is left out)."""
    if not p.sequential:
        return results.curves(folds, names), None
    per_fold = [results.fold_curves(f, names) for f in folds]
    curves = {k: np.concatenate([c[k][(i > 0) :] for i, c in enumerate(per_fold)])
              for k in per_fold[0]}  # fmt: skip
    fold = np.concatenate([np.full(len(c["train_mse"]) - (i > 0), i + 1)
                           for i, c in enumerate(per_fold)])  # fmt: skip
    return curves, fold


def steps_csv(p: Prepared, folds: list[results.FoldResult], names: list[str]) -> str | None:
    """Every logged optimizer step as CSV: fold, epoch, step, batch_mse and θ (original units)
    after the step; in sequential CV epochs and steps run on through the folds. None if the run
    logged no steps (``tracking.log_steps``)."""
    tables, epoch0, step0 = [], 0, 0
    for i, f in enumerate(folds):
        h = f.fit.steps_history
        if h is None:
            return None
        theta = p.scalers[i].to_original(h.theta)
        table = np.column_stack([np.full(len(h.step), i + 1), h.epoch + epoch0, h.step + step0,
                                 h.batch_mse, theta])  # fmt: skip
        tables.append(table)
        if p.sequential:
            epoch0, step0 = epoch0 + f.fit.epochs_run, step0 + f.fit.steps
    out = io.StringIO()
    out.write(",".join(["fold", "epoch", "step", "batch_mse", *names]) + "\n")
    np.savetxt(
        out, np.concatenate(tables), delimiter=",", fmt=["%d"] * 3 + ["%.9g"] * (1 + len(names))
    )
    return out.getvalue()


def history_files(p: Prepared, folds: list[results.FoldResult], names: list[str]) -> tuple:
    """The run's curves, and its ``history.csv`` (and ``history_steps.csv``, where it logged
    steps) as artifacts."""
    curves, fold = run_curves(p, folds, names)
    files = {"history.csv": history_csv(curves if fold is None else {"fold": fold, **curves})}
    steps = steps_csv(p, folds, names)
    if steps is not None:
        files["history_steps.csv"] = steps
    return curves, files


def log_partial(p: Prepared, run_id: str, fits: list) -> None:
    """The curves of an interrupted run, up to its last finished chunk."""
    tracking = client.calls()
    curves, files = history_files(p, p.evaluate(fits), results.theta_names(p.dataset.X.shape[1]))
    log_curves(run_id, curves, {}, p.cfg.tracking.max_curve_points)
    tracking.log_files(run_id, files)


def example_rows(p: Prepared) -> list[list[float | str]]:
    """The model's input example: the first rows of the data as the file held them (a one-hot
    group as its category's name, in :func:`~lrexp.core.data.input_columns` order)."""
    ds = p.dataset
    return data.raw_rows(ds.X[:5], ds.feature_names, ds.categories)


PLOTTED_ROWS = 2000  # at most this many train and test rows in fitted_vs_actual.svg


def logs_model(cfg: Config, sweep: SweepJob | None) -> bool:
    """Whether the run logs its model now: a sweep's child does only with sweep_model=every (with
    ``best``, the sweep's end logs the best child's)."""
    return cfg.tracking.log_model and (sweep is None or cfg.tracking.sweep_model == "every")


VERDICT_TAGS = ("lrexp.converged", "lrexp.verdict", "lrexp.advice")


def verdict_tags(v: Verdict | None) -> dict[str, str]:
    """The run's verdict as tags: converged (true/false), the reason, the advice (one line)."""
    if v is None:
        return {}
    tags = {"lrexp.converged": str(v.converged).lower(), "lrexp.verdict": v.reason}
    if v.advice:
        tags["lrexp.advice"] = "; ".join(v.advice)
    return tags


def log_outputs(
    p: Prepared,
    outcome: Outcome,
    sweep: SweepJob | None = None,
    *,
    params: Mapping[str, Any] = {},
    files: Mapping[str, str] = {},
) -> None:
    """The model, then curves and summary metrics in batches, then θ, the full history and the
    figures as one copy of artifacts; ``params`` and ``files`` go in the same requests (a run
    logged after its training: its inputs too, see :func:`input_params`, :func:`config_files`)."""
    tracking = client.calls()
    ds, folds, names = outcome.dataset, outcome.folds, outcome.names
    t = p.cfg.tracking
    model_id = None
    if logs_model(p.cfg, sweep):
        model_id = tracking.log_model(
            outcome.theta, list(ds.feature_names), example_rows(p), categories=ds.categories
        )
    curves, history = history_files(p, folds, names)
    scalars = dict(outcome.summary)
    if isinstance(p.cfg.data, FileData):
        scalars["data_dropped_rows"] = ds.dropped_rows
    tags = verdict_tags(outcome.verdict)  # a diverged run's too: it ends FAILED after this
    log_curves(outcome.run_id, curves, scalars, t.max_curve_points, model_id, params, tags)
    theta = {
        "names": names,
        "theta": outcome.theta.tolist(),
        "theta_star": outcome.theta_star.tolist(),
        "theta_true": None if ds.true_theta is None else ds.true_theta.tolist(),
        "folds": [{"theta": f.theta.tolist(), "theta_star": f.theta_star.tolist()} for f in folds],
        "features": list(ds.feature_names),  # with "categories" and "example": what a model
        "categories": ds.categories,  # of θ needs; a one-hot group's first category: no feature
        "columns": data.input_columns(ds.feature_names, ds.categories),  # a model's raw input
        "example": example_rows(p),  # raw rows of "columns"
    }
    optimal = float(np.mean([f.optimum["mse"] for f in folds]))
    shown = len(folds) - 1 if p.sequential else 0  # sequential: the one model, after every fold
    # A figure of every row would be megabytes of SVG (and seconds) at 1e6 rows: evenly spaced
    # rows of each set, which the random split has already shuffled.
    tr, te = (rows[:: -(-len(rows) // PLOTTED_ROWS)] for rows in p.parts[shown])
    w = folds[shown].theta

    def fitted(rows):
        return w[0] + np.asarray(ds.X[rows], dtype=np.float64) @ w[1:]

    tracking.log_files(
        outcome.run_id,
        {
            **files,
            "theta.json": json.dumps(theta, indent=2),
            **history,
            **({"categories.json": json.dumps(ds.categories, indent=2)} if ds.categories else {}),
            "plots/loss_curve.svg": plots.loss_curve(
                curves, optimal, 1 if p.sequential else len(folds), p.title
            ),
            "plots/fitted_vs_actual.svg": plots.fitted_vs_actual(
                ds.y[tr], fitted(tr), ds.y[te], fitted(te), ds.target_name
            ),
        },
    )
