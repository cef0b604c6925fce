"""A run's life in the store: experiments, runs opened and ended (never left RUNNING), heartbeats,
and writes retried while another process holds the store's lock."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from lrexp.tracking import signals, store

ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite store; `mlflow server`'s own default destination


def experiment_id(uri: str, name: str) -> str:
    """Return the id of experiment ``name``, creating it if needed (never via set_experiment)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return create_experiment(uri, name)
    except mlflow.exceptions.MlflowException:  # created by another process meanwhile
        return client.get_experiment_by_name(name).experiment_id


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


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client = MlflowClient(uri)
    for k, v in tags.items():
        retried(lambda k=k, v=v: client.set_tag(run_id, k, v))
