"""Reading runs back (compare, reproduce, reap, skip_finished, a sweep's summary): plain dicts,
arrays and text from the store; nothing here writes."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from lrexp.tracking import lifecycle  # noqa: F401  (stores are created under lrexp's lock)


def run_status(uri: str, run_id: str) -> str:
    return MlflowClient(uri).get_run(run_id).info.status


def run_experiment_id(uri: str, run_id: str) -> str:
    """The id of the experiment a run is in (the UI's links name it)."""
    return MlflowClient(uri).get_run(run_id).info.experiment_id


def child_runs(uri: str, exp_id: str, parent_id: str) -> list[dict[str, Any]]:
    """The runs nested under ``parent_id``: id, name, status, params, metrics and tags of each."""
    runs = MlflowClient(uri).search_runs(
        [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=50000
    )
    return [
        {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "status": r.info.status,
            "params": dict(r.data.params),
            "metrics": dict(r.data.metrics),
            "tags": dict(r.data.tags),
        }
        for r in runs
    ]


def find_finished(uri: str, experiment: str, tag: str, value: str) -> dict[str, Any] | None:
    """The newest FINISHED run of ``experiment`` whose tag ``tag`` equals ``value``, if any."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        max_results=1,
        filter_string=f"tags.`{tag}` = '{value}' and status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        return None
    r = runs[0]
    return {
        "run_id": r.info.run_id,
        "name": r.info.run_name,
        "metrics": dict(r.data.metrics),
        "tags": dict(r.data.tags),
    }


def stale_runs(uri: str, experiment: str | None, older_than: float) -> list[dict[str, Any]]:
    """RUNNING runs whose last heartbeat (or start, if none) is more than ``older_than`` s old."""
    client = MlflowClient(uri)
    if experiment is None:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exp = client.get_experiment_by_name(experiment)
        exp_ids = [] if exp is None else [exp.experiment_id]
    if not exp_ids:
        return []
    now, stale = time.time(), []
    for r in client.search_runs(exp_ids, filter_string="status = 'RUNNING'", max_results=50000):
        beat = float(r.data.tags.get("lrexp.heartbeat", r.info.start_time / 1000))
        if now - beat > older_than:
            stale.append({"run_id": r.info.run_id, "name": r.info.run_name, "last_beat": beat})
    return stale


def metric_curve(uri: str, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The steps and values of metric ``key`` of a run, ordered by step."""
    history = sorted(MlflowClient(uri).get_metric_history(run_id, key), key=lambda m: m.step)
    return (
        np.asarray([m.step for m in history], dtype=np.int64),
        np.asarray([m.value for m in history], dtype=np.float64),
    )


# --- reading runs back (compare, reproduce) ---
def experiment_names(uri: str) -> list[str]:
    """The names of the store's active experiments, sorted."""
    return sorted(e.name for e in MlflowClient(uri).search_experiments())


def find_experiment(uri: str, name: str) -> str | None:
    """The id of the active experiment ``name``, or None where there is none (never creates it)."""
    exp = MlflowClient(uri).get_experiment_by_name(name)
    return exp.experiment_id if exp is not None and exp.lifecycle_stage == "active" else None


def experiment_name(uri: str, exp_id: str) -> str:
    """The name of the experiment with id ``exp_id``."""
    return MlflowClient(uri).get_experiment(exp_id).name


def _record(r: Any) -> dict[str, Any]:
    return {
        "run_id": r.info.run_id,
        "name": r.info.run_name,
        "status": r.info.status,
        "experiment_id": r.info.experiment_id,
        "start_time": r.info.start_time,
        "params": dict(r.data.params),
        "metrics": dict(r.data.metrics),
        "tags": dict(r.data.tags),
    }


def runs_of(uri: str, exp_id: str) -> list[dict[str, Any]]:
    """Every active run of an experiment: id, name, status, params, metrics and tags of each."""
    runs = MlflowClient(uri).search_runs([exp_id], max_results=50000)
    return [_record(r) for r in runs]


def find_run(uri: str, run_id: str) -> dict[str, Any] | None:
    """One run as :func:`runs_of` describes it, or None where the store has no such run."""
    try:
        return _record(MlflowClient(uri).get_run(run_id))
    except mlflow.exceptions.MlflowException:
        return None


def artifact_text(uri: str, run_id: str, path: str) -> str | None:
    """The text of a run's artifact ``path``, or None where the run has no such artifact."""
    bar = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # a progress bar on stderr per small file
    quiet = bar not in os.environ
    if quiet:
        os.environ[bar] = "false"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = MlflowClient(uri).download_artifacts(run_id, path, tmp)
            return Path(local).read_text(encoding="utf-8")
        except (mlflow.exceptions.MlflowException, OSError, UnicodeDecodeError):
            return None
        finally:
            if quiet:
                os.environ.pop(bar, None)
