"""What a run writes: params, metrics, files, its data set and its model, in as few requests as
MLflow allows. Metrics go in batches (one ``log_batch`` call carries up to 1000 values), never one
``log_metric`` call per step; non-finite values are left out rather than stored as ±1.8e308."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from lrexp.tracking import mlflow_private
from lrexp.tracking.lifecycle import retried

# MLflow draws a progress bar when it reads artifacts back (validating the model's input example):
# noise in lrexp's terminal summary.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


MODEL_REQUIREMENTS = ("mlflow", "numpy", "pandas")  # what lrexp's pyfunc model imports
MAX_PARAM_KEY = 250


MAX_PARAM_VALUE = 6000


# How SQLite, PostgreSQL and MySQL refuse a second insert of one data set's row.
LOST_DATASET_RACE = ("UNIQUE constraint failed: datasets", "duplicate key", "Duplicate entry")


def log_to(
    uri: str,
    run_id: str,
    *,
    metrics: Mapping[str, float] = {},
    params: Mapping[str, Any] = {},
    texts: Mapping[str, str] = {},
) -> None:
    """Log to a run that is not active in this process (a sweep's parent)."""
    log_batch(run_id, scalars=metrics, params=params, client=MlflowClient(uri))
    log_files(run_id, texts, client=MlflowClient(uri))


def _params(params: Mapping[str, Any]) -> list[Param]:
    """Params within MLflow's limits: keys cut to 250 characters, values to 6000."""
    return [
        Param(str(k)[:MAX_PARAM_KEY], ("null" if v is None else str(v))[:MAX_PARAM_VALUE])
        for k, v in params.items()
    ]


def active_run_id() -> str:
    """The id of the run active in this process."""
    return mlflow.active_run().info.run_id


def log_params(params: Mapping[str, Any]) -> None:
    """Log params of the active run within MLflow's limits (one request per 100 params)."""
    log_batch(active_run_id(), params=params)


BATCH = 1000  # values per log_batch request (MLflow's limit; params and tags at most 100 each)


def log_batch(
    run_id: str,
    *,
    curves: Mapping[str, Sequence[float]] = {},
    steps: Sequence[int] | None = None,
    scalars: Mapping[str, float | None] = {},
    params: Mapping[str, Any] = {},
    tags: Mapping[str, str] = {},
    model_id: str | None = None,
    client: MlflowClient | None = None,
) -> int:
    """Log curves, scalars, params and tags in as few requests as MLflow allows; return how many
    metric values were kept (non-finite ones are left out).

    Value i of each curve is logged at ``steps[i]`` (default: step i; a shorter curve takes the
    first steps). Scalars are logged at step
    0 and, given ``model_id``, linked to that logged model (shown on its page in the UI).
    """
    metrics = metric_list(run_id, curves, steps, scalars, model_id)
    param_list = _params(params)
    tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
    client, kept = client or MlflowClient(), len(metrics)
    while metrics or param_list or tag_list:
        p, t = param_list[:100], tag_list[:100]
        m = metrics[: BATCH - len(p) - len(t)]
        param_list, tag_list, metrics = param_list[len(p) :], tag_list[len(t) :], metrics[len(m) :]
        retried(lambda m=m, p=p, t=t: client.log_batch(run_id, m, p, t, synchronous=True))
    return kept


def metric_list(
    run_id: str,
    curves: Mapping[str, Sequence[float]],
    steps: Sequence[int] | None,
    scalars: Mapping[str, float | None],
    model_id: str | None = None,
    now: int | None = None,
) -> list[Metric]:
    """The finite values of ``curves`` (value i at ``steps[i]``, default step i) and ``scalars``
    (at step 0, linked to ``model_id`` where given) as MLflow metrics, stamped ``now`` (ms)."""
    now = int(time.time() * 1000) if now is None else now
    metrics = [
        Metric(key, v, now, step)
        for key, values in curves.items()
        for step, v in zip(
            range(len(values)) if steps is None else [int(s) for s in steps[: len(values)]],
            np.asarray(values, dtype=np.float64).tolist(),
            strict=True,
        )
        if math.isfinite(v)
    ]
    return metrics + [
        Metric(k, float(v), now, 0, model_id=model_id, run_id=run_id if model_id else None)
        for k, v in scalars.items()
        if v is not None and math.isfinite(float(v))
    ]


def log_metrics(
    run_id: str,
    series: Mapping[str, Sequence[float]],
    scalars: Mapping[str, float],
    steps: Sequence[int] | None = None,
) -> int:
    """Log curves and summary scalars in batches; return how many values were kept."""
    return log_batch(run_id, curves=series, steps=steps, scalars=scalars)


def log_files(run_id: str, files: Mapping[str, str], client: MlflowClient | None = None) -> None:
    """Store text files (``{"plots/a.svg": text}``) as the run's artifacts, in one copy."""
    if not files:
        return
    client = client or MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        for path, text in files.items():
            local = Path(tmp, path)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text, encoding="utf-8")
        retried(lambda: client.log_artifacts(run_id, tmp))


def log_dataset(
    X: np.ndarray,
    y: np.ndarray,
    *,
    features: Sequence[str],
    target: str,
    name: str,
    source: str,
    context: str = "training",
) -> None:
    """Record the data set used (name, digest, schema, size, source) as the run's input.

    ``source`` is a file path for loaded data, else a description of the generator that made it.
    The digest and schema are MLflow's, computed from the columns' dtypes rather than by MLflow's
    pass over every cell in Python (10 s for 2e6 rows).
    """
    dataset = pandas_dataset(X, y, features=features, target=target, name=name, source=source)
    try:
        retried(lambda: mlflow.log_input(dataset, context=context))
    except mlflow.exceptions.MlflowException as e:
        # Parallel jobs logging a new data set at once: MLflow makes its row on first use, and all
        # but the first to insert it fail (the transaction rolled back). Now it exists: link it.
        if not any(m in str(e) for m in LOST_DATASET_RACE):
            raise
        retried(lambda: mlflow.log_input(dataset, context=context))


def pandas_dataset(
    X: np.ndarray, y: np.ndarray, *, features: Sequence[str], target: str, name: str, source: str
) -> Any:
    """The MLflow data set that :func:`log_dataset` records (a ``PandasDataset``)."""
    import pandas as pd
    from mlflow.data.code_dataset_source import CodeDatasetSource

    frame = pd.DataFrame(X, columns=list(features)).assign(**{target: y})
    is_file = Path(source).is_file()
    origin = (
        Path(source).resolve().as_uri() if is_file else CodeDatasetSource({"generator": source})
    )
    with warnings.catch_warnings():  # MLflow registers two local-file sources of the same name
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_pandas(
            frame,
            source=origin,
            targets=target,
            name=name,
            digest=mlflow_private.pandas_digest(frame),
        )
    mlflow_private.set_dataset_schema(dataset, frame)
    return dataset


def log_model(
    theta: Sequence[float],
    features: Sequence[str],
    example: Sequence[Sequence[float | str]],
    *,
    categories: Mapping[str, Sequence[str]] = {},
    run_id: str | None = None,
    uri: str | None = None,
    step: int = 0,
) -> str:
    """Log θ as a pyfunc model with an explicit signature and input ``example`` to the active run
    (or to ``run_id``, which may have ended, in the store ``uri``), as the model of training step
    ``step``; return the logged model's id.

    θ weighs ``features``; a feature ``"column=category"`` of a one-hot group in ``categories``
    is made by the model from the raw text column, so the model takes the raw columns (text for
    a group) and ``example`` rows are raw rows in that order.

    MLflow links to the new model every metric already logged at ``step``, reading each one's
    whole history back (a cost that grows with the curves logged before).
    """
    import pandas as pd
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    if uri is not None:
        mlflow.set_tracking_uri(uri)
    if run_id is not None:  # else MLflow files the model under the active (default) experiment
        mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
    cats = {str(c): [str(v) for v in vs] for c, vs in categories.items()}
    indicator = {f"{c}={v}": c for c, vs in cats.items() for v in vs[1:]}
    columns = list(dict.fromkeys([indicator.get(f, f) for f in features] + list(cats)))
    signature = ModelSignature(
        inputs=Schema([ColSpec("string" if c in cats else "double", c) for c in columns]),
        outputs=Schema([ColSpec("double")]),
    )
    theta_json = {
        "features": list(features),
        "categories": cats,
        "bias": float(theta[0]),
        "weights": [float(w) for w in theta[1:]],
    }
    frame = pd.DataFrame([list(r) for r in example], columns=columns)
    frame = frame.astype({c: str if c in cats else np.float64 for c in columns})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "theta.json")
        path.write_text(json.dumps(theta_json))
        info = Model.log(  # what mlflow.pyfunc.log_model does, with a run that need not be active
            artifact_path=None,
            name="model",
            step=step,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"theta": str(path)},  # θ as a file, not model_config (that becomes params)
            signature=signature,
            input_example=frame,
            pip_requirements=[f"mlflow=={mlflow.__version__}", *MODEL_REQUIREMENTS[1:]],
        )
    return info.model_id
