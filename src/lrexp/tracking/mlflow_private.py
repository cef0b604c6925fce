"""MLflow's internals that lrexp relies on, one function each, isolated here.

Each is used for speed alone (the public path does the same, slower), says why, and was checked
against MLflow 3.17.2 and 3.18.0. Where an internal is gone, each falls back to the public path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def pandas_digest(frame: pd.DataFrame) -> str:
    """MLflow's digest of a frame of numbers (``compute_pandas_digest``): a hash of its first
    rows, its length and its column names.

    Why: MLflow's own function hashes every cell through a Python pass (10 s at 2e6 rows); this is
    its equation on the first ``MAX_ROWS`` rows with pandas' vectorized hash, equal digest.
    """
    import pandas as pd
    from mlflow.data.digest_utils import compute_pandas_digest

    try:
        from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest
    except ImportError:  # moved or renamed in another MLflow: the public, slower path
        return compute_pandas_digest(frame)
    numeric = frame.select_dtypes(include=[np.number]).columns
    if len(numeric) != frame.shape[1]:
        return compute_pandas_digest(frame)
    trimmed = frame.head(MAX_ROWS)[pd.Index([]).union(numeric)]  # MLflow's column order
    return get_normalized_md5_digest(
        [pd.util.hash_pandas_object(trimmed).values, np.int64(len(frame))]
        + [str(c).encode() for c in frame.columns]
    )


def set_dataset_schema(dataset: Any, frame: pd.DataFrame) -> None:
    """Give an MLflow ``PandasDataset`` the schema of a frame of float64 columns up front.

    Why: ``PandasDataset.schema`` is a cached property that infers the schema cell by cell
    (``_infer_schema``); for float64 columns it is known from the dtypes. Pre-filling the cached
    property's slot in the instance's ``__dict__`` is how ``functools.cached_property`` stores it.
    """
    from mlflow.types import ColSpec, Schema

    if not all(dtype == np.float64 for dtype in frame.dtypes):
        return  # MLflow infers it, as usual
    dataset.__dict__["schema"] = Schema(
        [
            ColSpec("double", str(c), required=not np.isnan(frame[c].to_numpy()).any())
            for c in frame.columns
        ]
    )


def assume_model_requirements(packages: tuple[str, ...]) -> None:
    """Tell MLflow's requirement check that these packages provide the modules of the same name.

    Why: ``log_model`` checks the model's requirements against a map from modules to installed
    distributions, built by reading the file list of every installed distribution (0.3 s to over
    1 s). lrexp's model needs only ``mlflow``, ``numpy`` and ``pandas``. Only in the tracking
    process, which logs lrexp's model alone; a private cache, so only its time is at stake.
    """
    with contextlib.suppress(Exception):
        from mlflow.utils import requirements_utils

        if requirements_utils._MODULES_TO_PACKAGES is None:
            requirements_utils._MODULES_TO_PACKAGES = {p: [p] for p in packages}


def sql_store(uri: str) -> Any | None:
    """MLflow's own ``SqlAlchemyStore`` for ``uri`` (the one its client uses), or None where the
    store is another kind (a tracking server) or MLflow's internals have moved."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _get_store
    except ImportError:
        return None
    store = _get_store(uri)
    return store if isinstance(store, SqlAlchemyStore) else None


def insert_runs(store: Any, exp_id: str, runs: list[dict], datasets: dict[str, Any]) -> None:
    """Insert ended runs, each with its tags, params, metrics, latest metrics and data set input,
    in one transaction (all or none).

    Why: MLflow makes a run in at least four transactions (create, each ``log_batch`` of ≤ 1000
    values, ``log_input``, the end), and ``log_batch`` inserts metrics through the ORM one object
    at a time and re-reads the run's latest metrics: about 0.2 s of CPU per child of a sweep.
    Here the rows MLflow's ``create_run``, ``log_batch``, ``log_inputs`` and ``set_terminated``
    would write go in as bulk ``INSERT``s (executemany) into MLflow's own tables. Each run is a
    dict of the ``runs`` columns (``run_uuid``, ``name``, ``status``, …) plus ``tags`` and
    ``params`` (lists of (key, value)), ``metrics`` ((key, value, timestamp, step) of finite
    values), ``latest`` (key → that key's newest (value, timestamp, step)) and ``dataset`` (a
    key of ``datasets``, MLflow ``Dataset`` entities, or None). Checked against MLflow 3.17.2
    (``SqlAlchemyStore.create_run``, ``log_batch``, ``_log_inputs_impl``, the table models);
    raises if the tables differ, and the transaction rolls back: the caller falls back to the
    public calls.
    """
    import uuid

    from mlflow.store.tracking.dbmodels import models as m

    with store.ManagedSessionMaker(read_only=False) as session:
        uuids = {}
        for key, ds in datasets.items():
            row = (
                session.query(m.SqlDataset)
                .filter_by(experiment_id=int(exp_id), name=ds.name, digest=ds.digest)
                .first()
            )
            uuids[key] = row.dataset_uuid if row is not None else uuid.uuid4().hex
            if row is None:
                session.add(m.SqlDataset(
                    dataset_uuid=uuids[key], experiment_id=int(exp_id), name=ds.name,
                    digest=ds.digest, dataset_source_type=ds.source_type,
                    dataset_source=ds.source, dataset_schema=ds.schema,
                    dataset_profile=ds.profile,
                ))  # fmt: skip
        session.flush()
        columns = ("tags", "params", "metrics", "latest", "dataset")
        session.execute(m.SqlRun.__table__.insert(), [
            {k: v for k, v in r.items() if k not in columns} for r in runs
        ])  # fmt: skip
        session.execute(m.SqlTag.__table__.insert(), [
            {"run_uuid": r["run_uuid"], "key": k, "value": v} for r in runs for k, v in r["tags"]
        ])  # fmt: skip
        params = [{"run_uuid": r["run_uuid"], "key": k, "value": v}
                  for r in runs for k, v in r["params"]]  # fmt: skip
        if params:
            session.execute(m.SqlParam.__table__.insert(), params)
        many = _executemany(session, m.SqlMetric.__table__)
        many([(r["run_uuid"], k, v, t, s, False) for r in runs for k, v, t, s in r["metrics"]])
        many = _executemany(session, m.SqlLatestMetric.__table__)
        many(
            [
                (r["run_uuid"], k, v, t, s, False)
                for r in runs
                for k, (v, t, s) in r["latest"].items()
            ]
        )
        inputs = [(uuid.uuid4().hex, r) for r in runs if r["dataset"] is not None]
        if inputs:
            session.execute(m.SqlInput.__table__.insert(), [
                {"input_uuid": i, "source_type": "DATASET", "source_id": uuids[r["dataset"]],
                 "destination_type": "RUN", "destination_id": r["run_uuid"]}
                for i, r in inputs
            ])  # fmt: skip
            session.execute(m.SqlInputTag.__table__.insert(), [
                {"input_uuid": i, "name": "mlflow.data.context", "value": "training"}
                for i, _ in inputs
            ])  # fmt: skip


def _executemany(session: Any, table: Any) -> Callable[[list[tuple]], None]:
    """Insert rows of (run_uuid, key, value, timestamp, step, is_nan) into a metrics table with
    the driver's own ``executemany`` (SQLAlchemy's per-row parameter processing costs more than
    SQLite's insert); through SQLAlchemy where the driver's parameter style is not positional."""
    columns = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")
    marks = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(session.bind.dialect.paramstyle)

    def insert(rows: list[tuple]) -> None:
        if not rows:
            return
        if marks is None:
            session.execute(table.insert(), [dict(zip(columns, r, strict=True)) for r in rows])
            return
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([marks] * 6)})"
        session.connection().exec_driver_sql(sql, rows)

    return insert


def count_children(uri: str, parent: str) -> int | None:
    """How many runs of the store name ``parent`` as their parent (one SQL count), or None where
    the store is no SQL store MLflow's internals reach.

    Why: MLflow's only way is ``search_runs``, which reads every child's params, tags and latest
    metrics (seconds for thousands of children) to count them. Checked against MLflow 3.17.2.
    """
    store = sql_store(uri)
    if store is None:
        return None
    try:
        from mlflow.store.tracking.dbmodels import models as m

        with store.ManagedSessionMaker() as session:
            return session.query(m.SqlTag).filter_by(key="mlflow.parentRunId", value=parent).count()
    except Exception:
        return None
