"""A sweep's children, written many at a time (lrexp's batched launcher sends a batch at once).

Each child arrives whole, trained and scored: its name, status, tags, params, curves, summary
scalars, files and data set. Its files go straight to its artifact folder; then the runs of the
whole batch, with everything MLflow would have written for them through ``start_run``,
``log_batch``, ``log_input`` and ``end_run``, go into a SQL store in one transaction
(:func:`~lrexp.tracking.mlflow_private.insert_runs`): a child is never seen RUNNING, nor half
logged. Another store (a tracking server), or an MLflow whose tables differ, gets the same runs
through MLflow's public calls, one run at a time.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient

from lrexp.tracking import mlflow_private, writer
from lrexp.tracking.lifecycle import retried

_DATASETS: dict[str, Any] = {}  # MLflow data set entities made here, by the launcher's key


def log_runs(
    uri: str,
    exp_id: str,
    children: Sequence[Mapping[str, Any]],
    datasets: Mapping[str, Mapping[str, Any]] = {},
) -> list[tuple[str, dict[str, float]]]:
    """Record ``children`` as ended runs of experiment ``exp_id``; return each one's run id and
    latest metrics (what the store's run list shows), in order.

    A child: ``name``, ``status`` (FINISHED or FAILED), ``start_ms``, ``end_ms``, ``tags``,
    ``params``, ``curves`` (MLflow key → values, value i at ``steps[i]``), ``steps``,
    ``scalars`` (at step 0), ``files`` (artifact path → text) and ``dataset`` (a key of
    ``datasets``, sent once per process: ``X``, ``y``, ``features``, ``target``, ``name``,
    ``source``, as :func:`~lrexp.tracking.writer.log_dataset` takes them).
    """
    from mlflow.tracking.context import registry

    for key, d in datasets.items():
        if key not in _DATASETS:
            _DATASETS[key] = writer.pandas_dataset(**d)._to_mlflow_entity()
    client = MlflowClient(uri)
    exp = retried(lambda: client.get_experiment(exp_id))
    context = registry.resolve_tags({})  # what start_run adds: user, source name and type
    runs = [_run(c, exp.artifact_location, context, int(exp_id)) for c in children]
    entities = {r["dataset"]: _DATASETS[r["dataset"]] for r in runs if r["dataset"] is not None}
    store = mlflow_private.sql_store(uri)
    pairs = list(zip(runs, children, strict=True))
    written = [_write_files(r["artifact_uri"], c["files"]) for r, c in pairs]
    try:
        if store is None:
            raise LookupError("no SQL store")
        retried(lambda: mlflow_private.insert_runs(store, exp_id, runs, entities))
    except Exception:  # another store, or other tables: MLflow's public calls
        for folder in written:
            if folder is not None:
                shutil.rmtree(folder.parent, ignore_errors=True)
        for r, c in pairs:
            r["run_uuid"] = _one_run(client, exp_id, r, c)
    return [(r["run_uuid"], {k: v[0] for k, v in r["latest"].items()}) for r in runs]


def _run(child: Mapping[str, Any], root: str, context: Mapping[str, str], exp_id: int) -> dict:
    """The ``runs`` row of a child, with its tags, params, metrics and latest metrics."""
    run_id = uuid.uuid4().hex
    tags = {**context, **child["tags"], "mlflow.runName": child["name"]}
    metrics, latest = metric_rows(
        child["curves"], child["steps"], child["scalars"], child["end_ms"]
    )
    return {
        "run_uuid": run_id,
        "name": child["name"],
        "artifact_uri": f"{root.rstrip('/')}/{run_id}/artifacts",
        "experiment_id": exp_id,
        "source_type": "UNKNOWN",
        "source_name": "",
        "entry_point_name": "",
        "user_id": tags.get("mlflow.user"),
        "status": child["status"],
        "start_time": child["start_ms"],
        "end_time": child["end_ms"],
        "deleted_time": None,
        "source_version": "",
        "lifecycle_stage": "active",
        "tags": [(k, str(v)) for k, v in tags.items()],
        "params": [(p.key, p.value) for p in writer._params(child["params"])],
        "metrics": metrics,
        "latest": latest,
        "dataset": child.get("dataset"),
    }


def metric_rows(
    curves: Mapping[str, Sequence[float]],
    steps: Sequence[int],
    scalars: Mapping[str, float | None],
    now: int,
) -> tuple[list[tuple], dict[str, tuple]]:
    """The finite values of ``curves`` (value i at ``steps[i]``) and ``scalars`` (at step 0) as
    (key, value, timestamp, step) rows, as :func:`~lrexp.tracking.writer.metric_list` makes
    them; and each key's newest (value, timestamp, step): MLflow's latest metric, the greatest
    (step, timestamp, value)."""
    rows: list[tuple] = []
    latest: dict[str, tuple] = {}
    all_steps = np.asarray(steps, dtype=np.int64)
    pairs = [(k, np.asarray(v, dtype=np.float64), all_steps[: len(v)]) for k, v in curves.items()]
    pairs += [(k, np.asarray([float(v)]), np.zeros(1, np.int64)) for k, v in scalars.items()
              if v is not None]  # fmt: skip
    for key, values, at in pairs:
        ok = np.isfinite(values)
        values, at = values[ok].tolist(), at[ok].tolist()
        rows += zip(itertools.repeat(key), values, itertools.repeat(now), at, strict=False)
        for v, step in zip(values, at, strict=True):
            old = latest.get(key)
            if old is None or (step, now, v) > (old[2], old[1], old[0]):
                latest[key] = (v, now, step)
    return rows, latest


def _write_files(artifact_uri: str, files: Mapping[str, str]) -> Path | None:
    """Write a run's text files into its local artifact folder; return the folder (None where
    the artifact store is not a local folder: the public path stores them)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return None
    folder = Path(url2pathname(parsed.path))
    for path, text in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return folder


def _one_run(client: MlflowClient, exp_id: str, row: dict, child: Mapping[str, Any]) -> str:
    """Record one child through MLflow's public calls; return its run id."""
    tags = dict(row["tags"])
    run = retried(lambda: client.create_run(exp_id, start_time=row["start_time"], tags=tags,
                                            run_name=child["name"]))  # fmt: skip
    run_id = run.info.run_id
    writer.log_batch(run_id, curves=child["curves"], steps=child["steps"],
                     scalars=child["scalars"], params=child["params"], client=client)  # fmt: skip
    if row["dataset"] is not None:
        context = [InputTag("mlflow.data.context", "training")]
        used = DatasetInput(_DATASETS[row["dataset"]], context)
        retried(lambda: client.log_inputs(run_id, datasets=[used]))
    with tempfile.TemporaryDirectory() as tmp:
        for path, text in child["files"].items():
            Path(tmp, path).parent.mkdir(parents=True, exist_ok=True)
            Path(tmp, path).write_text(text, encoding="utf-8")
        if child["files"]:
            retried(lambda: client.log_artifacts(run_id, tmp))
    end = child["end_ms"] or int(time.time() * 1000)
    retried(lambda: client.set_terminated(run_id, child["status"], end_time=end))
    return run_id
