"""A run's life in the store: the store created under a lock, experiments, runs opened and ended
(never left RUNNING), heartbeats, and writes retried while another process holds the store's lock.

Importing this module makes every SQLite store this process opens through MLflow be created or
upgraded under ``<db>.lock`` (:func:`lrexp.tracking.store_file.creating`), whoever opens it first:
MLflow itself creates and migrates tables without a lock, and processes doing it at once break
the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from lrexp.tracking import hooks, signals, store, store_file
from lrexp.tracking.heartbeat import (  # noqa: F401  (re-exported: its users import them from here)
    HEARTBEAT_S,
    HOLDER_TAG,
    OPEN_RUNS,
    Heartbeat,
    _beating,
    owner,
    reap_orphaned_sweeps,
    start_heartbeat,
    stop_heartbeat,
)

ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite store; `mlflow server`'s own default destination


def experiment_id(uri: str, name: str) -> str:
    """Return the id of experiment ``name``, creating it if needed (never via set_experiment);
    a deleted one is refused (:class:`~lrexp.tracking.store.StoreError`: how to restore it)."""
    client = MlflowClient(uri)
    exp = retried(lambda: client.get_experiment_by_name(name))
    if exp is None:
        try:
            return retried(lambda: create_experiment(uri, name))
        except mlflow.exceptions.MlflowException:  # created by another process meanwhile
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        raise store.StoreError(f"tracking.experiment={name}: {store.experiment_problem(uri, name)}")
    return exp.experiment_id


def create_experiment(uri: str, name: str) -> str:
    """Create experiment ``name``; in a SQLite store, with its artifacts beside the store's file.

    MLflow's default artifact root for a SQLite store is ``./mlruns``, relative to whichever
    directory the process runs in: the artifacts would land apart from the store, wherever lrexp
    was launched. Here they go to ``<store's directory>/mlartifacts/<experiment id>`` (the id is
    known only once the experiment exists, so the store is given that root and names the folder).
    A tracking server or another database keeps its own artifact root.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return MlflowClient(uri).create_experiment(name)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = Path(uri[len(prefix) :]).resolve().parent / ARTIFACTS_DIR
    return SqlAlchemyStore(uri, root.as_uri()).create_experiment(name)


STORE_RETRIES = int(os.environ.get("LREXP_STORE_RETRIES", "3"))  # after SQLite's own 20 s wait
BUSY_S = os.environ.get("LREXP_STORE_BUSY_S")  # SQLite's wait for a lock, if not MLflow's 20 s


class StoreLocked(RuntimeError):
    """The store stayed locked by another process through every retry."""


def retried(call: Callable[[], Any]) -> Any:
    """Make one write, again while another process holds the SQLite store's lock, up to a bound.

    SQLite already waits 20 s for a lock; each retry waits that long again. Writes are retried
    one call at a time (a batch of metrics, a tag), so a retry never logs anything twice.
    """
    signals.raise_pending()  # a stop request dropped where it arrived (a callback) acts here
    for attempt in range(STORE_RETRIES + 1):
        try:
            return call()
        except Exception as e:
            if "database is locked" not in str(e):
                raise
            if attempt == STORE_RETRIES:
                raise StoreLocked(
                    f"the tracking store stayed locked by another process through "
                    f"{attempt + 1} attempt(s), each waiting SQLite's busy timeout (20 s); "
                    "everything logged before is kept"
                ) from e
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def open_run(
    uri: str,
    experiment: str | None,
    run_name: str,
    tags: Mapping[str, str],
    *,
    exp_id: str | None = None,
) -> str:
    """Start one MLflow run, active in this process, and return its id (see :func:`run`)."""
    hooks.pause_at("store")
    mlflow.set_tracking_uri(uri)
    while mlflow.active_run() is not None:  # left over by an earlier job in a reused worker
        mlflow.end_run("KILLED")
    if exp_id is None:
        exp_id = experiment_id(uri, experiment)
    tags = {**tags, "lrexp.heartbeat": f"{time.time():.3f}", HOLDER_TAG: owner()}
    return retried(
        lambda: mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags)
    ).info.run_id


def close_run(
    status: str,
    reason: str | None = None,
    trace: str | None = None,
    *,
    uri: str | None = None,
    run_id: str | None = None,
) -> None:
    """End the active run (or ``run_id`` in ``uri``) as ``status``, recording ``reason`` (the tag
    ``lrexp.failure_reason``) and ``trace`` (``failure/traceback.txt``) where given.

    The run ends even if those fail: the end is retried, and if MLflow still cannot write it, a
    SQLite store is written directly (:func:`~lrexp.tracking.store_file.end_directly`); the error is
    raised only when that fails too."""
    active = mlflow.active_run()
    run_id = run_id or (active.info.run_id if active is not None else None)
    if run_id is None:
        return
    uri = uri or mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    with contextlib.suppress(Exception):
        if reason is not None:
            retried(lambda: client.set_tag(run_id, "lrexp.failure_reason", reason))
        if trace is not None:
            retried(lambda: client.log_text(run_id, trace, "failure/traceback.txt"))
    is_active = active is not None and active.info.run_id == run_id

    def end() -> None:
        if is_active:
            mlflow.end_run(status)  # ends it in the store, and here
        else:
            client.set_terminated(run_id, status)

    try:
        retried(end)
    except Exception:
        if not store_file.end_directly(uri, run_id, status, reason):
            raise


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
    opening = object()  # this process has a run open from before it is made to after it ends
    OPEN_RUNS.add(opening)
    try:
        run_id = open_run(uri, experiment, run_name, tags, exp_id=exp_id)
        try:
            with Heartbeat(uri, run_id):
                yield run_id
                signals.raise_pending()  # a stop request whose exception was dropped on the way
        except BaseException as e:
            signals.seen(e)
            close_run(*signals.ending(e, traceback.format_exc()), uri=uri, run_id=run_id)
            raise
        close_run("FINISHED", uri=uri, run_id=run_id)
    finally:
        OPEN_RUNS.discard(opening)


def init_store(uri: str) -> None:
    """Create or upgrade the store's tables now, under its lock (see the module's docstring),
    and refresh a SQLite store's statistics for reading metric histories back."""
    retried(lambda: MlflowClient(uri).search_experiments(max_results=1))
    store_file.analyze(uri)


def _locked_store_builder(build: Callable[..., Any]) -> Callable[..., Any]:
    """MLflow's builder of SQLite stores, run under the store's lock (once per process and URI:
    MLflow keeps the stores it built)."""

    def locked(store_uri: str, artifact_uri: str | None = None) -> Any:
        with store_file.creating(store_uri):
            built = retried(lambda: build(store_uri=store_uri, artifact_uri=artifact_uri))
        with contextlib.suppress(sqlite3.Error):  # housekeeping only: never in the way
            reap_orphaned_sweeps(store_uri)  # a killed sweep's launcher left its parent
        if BUSY_S is not None:  # a test's short wait for a locked store (MLflow sets 20 s)
            from sqlalchemy import event

            ms = int(float(BUSY_S) * 1000)

            def busy(conn, cursor, statement, params, context, many):
                if statement.startswith("PRAGMA busy_timeout"):
                    statement = f"PRAGMA busy_timeout = {ms};"
                return statement, params

            event.listen(built.engine, "before_cursor_execute", busy, retval=True)
        return built

    locked.lrexp_locked = True  # type: ignore[attr-defined]
    return locked


def _lock_store_creation() -> None:
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry as registry

    build = registry._registry.get("sqlite")
    if build is not None and not getattr(build, "lrexp_locked", False):
        registry.register("sqlite", _locked_store_builder(build))


_lock_store_creation()
# MLflow logs each failed SQL statement with its traceback (hundreds of lines for a locked store);
# lrexp reports the failure itself, in a line, and records it in the run.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


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
    try:
        retried(lambda: client.set_terminated(run_id, status))
    except Exception:
        if not store_file.end_directly(uri, run_id, status, None):
            raise


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client = MlflowClient(uri)
    for k, v in tags.items():
        retried(lambda k=k, v=v: client.set_tag(run_id, k, v))
