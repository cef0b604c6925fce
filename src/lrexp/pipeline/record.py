"""What a run records in MLflow: its inputs when it starts, its outputs when training returns.

Builds plain values (dicts, arrays, figures) from the run and hands them to the tracking layer's
calls (:func:`lrexp.tracking.client.calls`: the tracking process, or this process).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import lrexp.pipeline.provenance as provenance
from lrexp.config import Config, ConfigError, FileData, render
from lrexp.core import results
from lrexp.core.verdict import Verdict
from lrexp.pipeline.outputs import (
    example_rows,
    history_files,
    output_files,
    sample_steps,
)
from lrexp.tracking import client, hooks, metric_names, store

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
    hooks.pause_at("params")
    tracking.log_files(tracking.active_run_id(), files)
    log_dataset(p)


def inputs(p: Prepared, overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The run's params (its resolved config, flattened, and the shape of the run) and its config
    files (the resolved config and the command line's overrides, as YAML)."""
    ds, spec = p.dataset, p.spec
    n_train, n_test = p.sizes(0)
    params = {
        **render.params(p.cfg),
        "run.batch_size": spec.batch_size,
        "run.epochs": spec.epochs,
        "run.steps_per_epoch": spec.steps_per_epoch(n_train),
        "run.n_rows": p.n_rows,
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


def log_partial(p: Prepared, run_id: str, fits: list) -> None:
    """The curves of an interrupted run, up to its last finished chunk."""
    tracking = client.calls()
    curves, files = history_files(p, p.evaluate(fits), results.theta_names(p.dataset.X.shape[1]))
    log_curves(run_id, curves, {}, p.cfg.tracking.max_curve_points)
    tracking.log_files(run_id, files)


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
    """The curves; then θ, the full history and the figures as one copy of artifacts; then the
    model (the slow part) at the last epoch; then the summary metrics, linked to the model.

    Each is sent before the next begins, so a fault (a signal, a full disk) in a later one keeps
    what the earlier ones stored. MLflow links to a new model the metrics already logged at its
    step: the curves' values at the last epoch, the model's own. ``params`` and ``files`` go in
    the same requests (a run logged after its training: its inputs too, see :func:`inputs`)."""
    tracking = client.calls()
    ds, folds, names = outcome.dataset, outcome.folds, outcome.names
    t = p.cfg.tracking
    curves, history = history_files(p, folds, names)
    tags = verdict_tags(outcome.verdict)  # a diverged run's too: it ends FAILED after this
    log_curves(outcome.run_id, curves, {}, t.max_curve_points, None, params, tags)
    hooks.pause_at("curves")
    tracking.log_files(outcome.run_id, {**files, **history, **output_files(p, outcome, curves)})
    hooks.pause_at("artifacts")
    model_id = None
    if logs_model(p.cfg, sweep):
        last = max((len(c) for c in curves.values()), default=1) - 1
        model_id = tracking.log_model(
            outcome.theta, list(ds.feature_names), example_rows(p), categories=ds.categories,
            step=last,
        )  # fmt: skip
    scalars = dict(outcome.summary)
    if isinstance(p.cfg.data, FileData):
        scalars["data_dropped_rows"] = ds.dropped_rows
    log_curves(outcome.run_id, {}, scalars, t.max_curve_points, model_id)
    hooks.pause_at("end")
