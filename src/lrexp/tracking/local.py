"""MLflow tracking: the only module that imports mlflow. It takes plain values, never configs.

Metrics go to the store in batches (one ``log_batch`` call carries up to 1000 values), never one
``log_metric`` call per step; non-finite values are left out rather than stored as ±1.8e308.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from lrexp.tracking import signals, store
from lrexp.tracking.store import check_server, missing_store, resolve_uri  # noqa: F401  (callers use them here)

if TYPE_CHECKING:
    import pandas as pd

# MLflow draws a progress bar when it reads artifacts back (validating the model's input example):
# noise in lrexp's terminal summary.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000


def experiment_id(uri: str, name: str) -> str:
    """Return the id of experiment ``name``, creating it if needed (never via set_experiment)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException:  # created by another process meanwhile
        return client.get_experiment_by_name(name).experiment_id


# How SQLite, PostgreSQL and MySQL refuse a second insert of one data set's row.
LOST_DATASET_RACE = ("UNIQUE constraint failed: datasets", "duplicate key", "Duplicate entry")
HEARTBEAT_S = float(os.environ.get("LREXP_HEARTBEAT_S", "10"))  # seconds between heartbeats
STORE_RETRIES = int(os.environ.get("LREXP_STORE_RETRIES", "3"))  # after SQLite's own 20 s wait


class StoreLocked(RuntimeError):
    """The store stayed locked by another process through every retry."""


def retried(call: Callable[[], Any]) -> Any:
    """Make one write, again while another process holds the SQLite store's lock, up to a bound.

    SQLite already waits 20 s for a lock; each retry waits that long again. Writes are retried
    one call at a time (a batch of metrics, a tag), so a retry never logs anything twice.
    """
    for attempt in range(STORE_RETRIES + 1):
        try:
            return call()
        except Exception as e:
            if "database is locked" not in str(e):
                raise
            if attempt == STORE_RETRIES:
                raise StoreLocked(
                    f"the tracking store stayed locked by another process through "
                    f"{attempt + 1} waits of about 20 s; everything logged before is kept"
                ) from e
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


class Heartbeat:
    """A daemon thread that stamps ``lrexp.heartbeat`` on a run while the process lives.

    SIGKILL, OOM and power loss cannot be caught; a run whose heartbeat went stale is dead, and
    ``python -m lrexp.runs reap`` marks it KILLED.
    """

    def __init__(self, uri: str, run_id: str, every: float = HEARTBEAT_S):
        self.client, self.run_id, self.every = MlflowClient(uri), run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="lrexp-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            # a busy store skips a beat; staleness is judged generously
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, "lrexp.heartbeat", f"{time.time():.3f}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


_beating: dict[str, Heartbeat] = {}  # run id → its heartbeat, for runs not opened here


def start_heartbeat(uri: str, run_id: str) -> None:
    """Stamp a heartbeat on ``run_id`` (a sweep's parent) until :func:`stop_heartbeat`."""
    _beating[run_id] = Heartbeat(uri, run_id).__enter__()


def stop_heartbeat(run_id: str) -> None:
    beat = _beating.pop(run_id, None)
    if beat is not None:
        beat.__exit__()


def open_run(
    uri: str,
    experiment: str | None,
    run_name: str,
    tags: Mapping[str, str],
    *,
    exp_id: str | None = None,
) -> str:
    """Start one MLflow run, active in this process, and return its id (see :func:`run`)."""
    mlflow.set_tracking_uri(uri)
    while mlflow.active_run() is not None:  # left over by an earlier job in a reused worker
        mlflow.end_run("KILLED")
    if exp_id is None:
        exp_id = experiment_id(uri, experiment)
    tags = {**tags, "lrexp.heartbeat": f"{time.time():.3f}"}
    return mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags).info.run_id


def close_run(status: str, reason: str | None = None, trace: str | None = None) -> None:
    """End the active run as ``status``, recording ``reason`` (the tag ``lrexp.failure_reason``)
    and ``trace`` (``failure/traceback.txt``) where given; the run ends even if those fail."""
    try:
        if reason is not None:
            retried(lambda: mlflow.set_tag("lrexp.failure_reason", reason))
        if trace is not None:
            retried(lambda: mlflow.log_text(trace, "failure/traceback.txt"))
    finally:
        mlflow.end_run(status)


@contextmanager
def run(
    uri: str,
    experiment: str | None,
    run_name: str,
    tags: Mapping[str, str],
    *,
    exp_id: str | None = None,
) -> Iterator[str]:
    """Open one MLflow run and yield its id; it ends FINISHED, FAILED or KILLED, never RUNNING.

    An exception is recorded as the tag ``lrexp.failure_reason`` (with the traceback as an
    artifact); Ctrl-C and SIGTERM end the run KILLED; ``sys.exit(0)`` is no failure. ``exp_id``,
    where given, is used as it is (a sweep creates its experiment once, before any job starts).
    """
    run_id = open_run(uri, experiment, run_name, tags, exp_id=exp_id)
    try:
        with Heartbeat(uri, run_id):
            yield run_id
    except BaseException as e:
        close_run(*signals.ending(e, traceback.format_exc()))
        raise
    close_run("FINISHED")


def failure_reason(e: BaseException) -> str:
    """A one-line reason for a run's tag: the exception's type and message."""
    return signals.reason(e)


def init_store(uri: str) -> None:
    """Create the store's tables now, in this one process (MLflow creates them without a lock),
    and refresh a SQLite store's statistics for reading metric histories back."""
    MlflowClient(uri).search_experiments(max_results=1)
    store.analyze(uri)


def open_sweep(
    uri: str, experiment: str, run_name: str, tags: Mapping[str, str]
) -> tuple[str, str]:
    """Make the store, the experiment and a sweep's parent run (with a heartbeat); return the
    experiment's id and the parent's."""
    init_store(uri)
    exp_id = experiment_id(uri, experiment)
    parent = create_run(uri, exp_id, run_name, tags)
    start_heartbeat(uri, parent)
    return exp_id, parent


def create_run(uri: str, exp_id: str, run_name: str, tags: Mapping[str, str]) -> str:
    """Create a RUNNING run without making it active in this process (a sweep's parent)."""
    client = MlflowClient(uri)
    return retried(
        lambda: client.create_run(exp_id, run_name=run_name, tags=dict(tags))
    ).info.run_id


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client = MlflowClient(uri)
    retried(lambda: client.set_terminated(run_id, status))


def run_status(uri: str, run_id: str) -> str:
    return MlflowClient(uri).get_run(run_id).info.status


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client = MlflowClient(uri)
    for k, v in tags.items():
        retried(lambda k=k, v=v: client.set_tag(run_id, k, v))


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
    now = int(time.time() * 1000)
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
    metrics += [
        Metric(k, float(v), now, 0, model_id=model_id, run_id=run_id if model_id else None)
        for k, v in scalars.items()
        if v is not None and math.isfinite(float(v))
    ]
    param_list = _params(params)
    tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
    client, kept = client or MlflowClient(), len(metrics)
    while metrics or param_list or tag_list:
        p, t = param_list[:100], tag_list[:100]
        m = metrics[: BATCH - len(p) - len(t)]
        param_list, tag_list, metrics = param_list[len(p) :], tag_list[len(t) :], metrics[len(m) :]
        retried(lambda m=m, p=p, t=t: client.log_batch(run_id, m, p, t, synchronous=True))
    return kept


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
            frame, source=origin, targets=target, name=name, digest=pandas_digest(frame)
        )
    dataset.__dict__["schema"] = numeric_schema(frame)  # the cached property, known already
    try:
        retried(lambda: mlflow.log_input(dataset, context=context))
    except mlflow.exceptions.MlflowException as e:
        # Parallel jobs logging a new data set at once: MLflow makes its row on first use, and all
        # but the first to insert it fail (the transaction rolled back). Now it exists: link it.
        if not any(m in str(e) for m in LOST_DATASET_RACE):
            raise
        retried(lambda: mlflow.log_input(dataset, context=context))


def pandas_digest(frame: pd.DataFrame) -> str:
    """MLflow's digest of a frame of numbers (``compute_pandas_digest``): a hash of its first
    rows, its length and its column names."""
    import pandas as pd
    from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest

    numeric = frame.select_dtypes(include=[np.number]).columns
    if len(numeric) != frame.shape[1]:
        from mlflow.data.digest_utils import compute_pandas_digest

        return compute_pandas_digest(frame)
    trimmed = frame.head(MAX_ROWS)[pd.Index([]).union(numeric)]  # MLflow's column order
    return get_normalized_md5_digest(
        [pd.util.hash_pandas_object(trimmed).values, np.int64(len(frame))]
        + [str(c).encode() for c in frame.columns]
    )


def numeric_schema(frame: pd.DataFrame) -> Any:
    """MLflow's schema of a frame of float64 columns: doubles, required unless they hold NaN."""
    from mlflow.types import ColSpec, Schema
    from mlflow.types.utils import _infer_schema

    if not all(dtype == np.float64 for dtype in frame.dtypes):
        return _infer_schema(frame)
    return Schema(
        [
            ColSpec("double", str(c), required=not np.isnan(frame[c].to_numpy()).any())
            for c in frame.columns
        ]
    )


def log_json(obj: Any, artifact_file: str) -> None:
    retried(lambda: mlflow.log_text(json.dumps(obj, indent=2), artifact_file))


def log_text(text: str, artifact_file: str) -> None:
    retried(lambda: mlflow.log_text(text, artifact_file))


def log_model(
    theta: Sequence[float],
    features: Sequence[str],
    example: Sequence[Sequence[float]],
    *,
    run_id: str | None = None,
    uri: str | None = None,
) -> str:
    """Log θ as a pyfunc model with an explicit signature and input ``example`` (rows of the
    features) to the active run (or to ``run_id``, which may have ended, in the store ``uri``);
    return the logged model's id.

    Log it before the run's metrics: MLflow copies every metric already logged at the model's
    step onto the new model, reading each one's whole history back (0.1-0.4 s a run).
    """
    import pandas as pd
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    if uri is not None:
        mlflow.set_tracking_uri(uri)
    if run_id is not None:  # else MLflow files the model under the active (default) experiment
        mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
    signature = ModelSignature(
        inputs=Schema([ColSpec("double", f) for f in features]),
        outputs=Schema([ColSpec("double")]),
    )
    theta_json = {
        "features": list(features),
        "bias": float(theta[0]),
        "weights": [float(w) for w in theta[1:]],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "theta.json")
        path.write_text(json.dumps(theta_json))
        info = Model.log(  # what mlflow.pyfunc.log_model does, with a run that need not be active
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"theta": str(path)},  # θ as a file, not model_config (that becomes params)
            signature=signature,
            input_example=pd.DataFrame(
                np.asarray(example, dtype=np.float64), columns=list(features)
            ),
            pip_requirements=[f"mlflow=={mlflow.__version__}", "numpy", "pandas"],
        )
    return info.model_id


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
    import os

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
