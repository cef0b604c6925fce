"""The end of a sweep: a leaderboard of its child runs, seed statistics, an overlay of their curves.

Read back from the store, so it counts every job however it was launched (in this process, in
worker processes, as one batched program); except where this process logged every child itself
(:func:`log_children`, the batched launcher's): then from what it kept of them, in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lrexp.report import plots
from lrexp.tracking import bulk, landscapes, metric_names, mlflow_private, reader, writer
from lrexp.tracking.leaderboard import leaderboard, seed_stats, text

log = logging.getLogger("lrexp")

MAX_OVERLAY = 64  # curves drawn in the overlay plot, best first
HIGHLIGHT = 5  # of them, the best drawn in colour with a legend; the rest thin grey

# What this process logged of each sweep's children (log_children): parent → run id → the
# child's record as reader.child_runs gives it (with only the tags a summary reads, KEPT_TAGS);
# and the overlay's curves of the best of them.
_CHILDREN: dict[str, dict[str, dict]] = {}
KEPT_TAGS = {"mlflow.parentRunId", "lrexp.job_num", "lrexp.failure_reason", "lrexp.verdict",
             "lrexp.converged", "lrexp.config_hash_noseed", "lrexp.skipped_for"}  # fmt: skip
_CURVES: dict[str, dict[str, tuple]] = {}


def log_children(
    uri: str,
    exp_id: str,
    children: Sequence[Mapping[str, Any]],
    datasets: Mapping[str, Mapping[str, Any]] = {},
) -> None:
    """Record a batch of a sweep's children as ended runs (:func:`lrexp.tracking.bulk.log_runs`),
    and keep what the sweep's summary needs of them: its leaderboard's record of each child and
    the train and test curves of the best :data:`MAX_OVERLAY`."""
    train, test = metric_names.curve_key("train_mse"), metric_names.curve_key("test_mse")
    for child, (run_id, latest) in zip(
        children, bulk.log_runs(uri, exp_id, children, datasets), strict=True
    ):
        parent = child["tags"].get("mlflow.parentRunId")
        if parent is None:
            continue
        record = {"run_id": run_id, "name": child["name"], "status": child["status"],
                  "params": {p.key: p.value for p in writer._params(child["params"])},
                  "metrics": latest, "tags": {k: v for k, v in child["tags"].items()
                                              if k in KEPT_TAGS}}  # fmt: skip
        _CHILDREN.setdefault(parent, {})[run_id] = record
        steps = np.asarray(child["steps"], dtype=np.int64)
        _CURVES.setdefault(parent, {})[run_id] = tuple(
            _finite(steps, child["curves"].get(k, [])) for k in (train, test)
        )
    for parent, curves in _CURVES.items():  # only the best are drawn: keep those
        if len(curves) > 2 * MAX_OVERLAY:
            board = leaderboard([_CHILDREN[parent][r] for r in curves])
            best = set(board[board["reason"] == ""]["run_id"].head(MAX_OVERLAY))
            _CURVES[parent] = {r: c for r, c in curves.items() if r in best}


def _finite(steps: np.ndarray, values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A curve's (steps, values) as the store keeps it: non-finite values left out."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    return steps[: len(v)][ok], v[ok]


def _remembered(uri: str, parent: str) -> tuple[list[dict], dict] | None:
    """The children this process logged under ``parent``, and their kept curves, where they are
    all of its children (one count in the store); else None: the store is read."""
    children, curves = _CHILDREN.pop(parent, {}), _CURVES.pop(parent, {})
    if not children or mlflow_private.count_children(uri, parent) != len(children):
        return None
    return list(children.values()), curves


def overlay_curves(uri: str, runs: list[tuple[str, str]]) -> dict:
    """The train and test MSE curves (MLflow keys ``loss/…``) of ``runs`` (label, run id): a
    dict label → ((epochs, train MSE), (epochs, test MSE)), runs without a curve left out."""
    train, test = metric_names.curve_key("train_mse"), metric_names.curve_key("test_mse")
    curves = {}
    for label, run_id in runs:
        tr, te = reader.metric_curve(uri, run_id, train), reader.metric_curve(uri, run_id, test)
        if _drawn((tr, te)):
            curves[label] = (tr, te)
    return curves


def _drawn(curves: tuple) -> bool:
    """Whether a run's (train, test) curves are curves: a skipped run has only the last point."""
    return len(curves[0][0]) > 1 or len(curves[1][0]) > 1


def summarize(uri: str, exp_id: str, parent: str, *, best_model: bool = False) -> str:
    """Log the leaderboard, seed statistics and overlay plot to the parent run; return a text.

    With ``best_model``, the best child also gets its pyfunc model now (the children of such a
    sweep log none: it costs each of them as much as the rest of its logging).
    """
    known = _remembered(uri, parent)
    children = known[0] if known else reader.child_runs(uri, exp_id, parent)
    board = leaderboard(children)
    finished = board[board["status"] == "FINISHED"]
    failed = board[board["status"] != "FINISHED"]
    healthy = board[board["reason"] == ""]
    seeds = seed_stats(board)
    metrics = {
        "jobs": len(board),
        "jobs_finished": len(finished),
        "jobs_failed": len(failed),
        "jobs_converged": int((board["converged"] == "true").sum()),
    }
    params = {}
    if len(healthy):
        best = healthy.iloc[0]
        metrics["best_test_mse"] = best["test_mse"]
        params = {"best.run_id": best["run_id"], "best.run": best["run"]}
        model_id = log_best_model(uri, best["run_id"]) if best_model else None
        if model_id is not None:
            params["best.model_uri"] = f"models:/{model_id}"
    if len(seeds):
        metrics["best_seed_mean_test_mse"] = seeds["mean_test_mse"].iloc[0]
    shown = healthy.head(MAX_OVERLAY)
    labelled = list(zip(shown["run"], shown["run_id"], strict=True))
    curves = (
        {label: c for label, r in labelled if (c := known[1].get(r)) and _drawn(c)}
        if known
        else overlay_curves(uri, labelled)
    )
    scores = dict(zip(shown["run"], shown["test_mse"], strict=True))
    texts = {
        "leaderboard.csv": board.to_csv(index=False),
        "plots/overlay.svg": plots.overlay(
            curves,
            title="the sweep's runs",
            scores=scores,
            total=len(healthy),
            highlight=HIGHLIGHT,
            left_out=len(board) - len(healthy),
        ),
    }
    if len(seeds):
        texts["seeds.csv"] = seeds.to_csv(index=False)
    by_id = {c["run_id"]: c for c in children}  # the best paths on one landscape
    best = [by_id[i] for i in healthy["run_id"]]
    if (land := landscapes.sweep_landscape(uri, best, list(healthy["test_mse"]))) is not None:
        texts["plots/landscape.svg"] = land
    writer.log_to(uri, parent, metrics=metrics, params=params, texts=texts)
    return text(board, seeds, parent)


def log_best_model(uri: str, run_id: str) -> str | None:
    """Log the pyfunc model of a finished child from its ``theta.json``; return the model's id.

    None where the child has no usable ``theta.json`` (a job skipped for an earlier run) or the
    model could not be logged: the sweep's summary goes on without it.
    """
    doc = reader.artifact_text(uri, run_id, "theta.json")
    try:
        theta = json.loads(doc) if doc else {}
        if "features" not in theta:
            return None
        return writer.log_model(
            theta["theta"], theta["features"], theta["example"],
            categories=theta.get("categories", {}), run_id=run_id, uri=uri,
        )  # fmt: skip
    except Exception as e:
        log.warning("could not log the best child's model: %s", e)
        return None
