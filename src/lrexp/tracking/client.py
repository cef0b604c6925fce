"""Track a run from a second process, so that MLflow's start-up overlaps JAX's and the training.

A tracked ``python -m lrexp.train`` spends about as long importing MLflow, opening its store and
logging a first model as it spends importing JAX, composing the config and training. On two
cores the two can run side by side. The CLI starts a tracking process before it imports JAX; that
process imports MLflow (never JAX) and prepares what a run's first calls need, while the training
process works. Every call that :mod:`lrexp.pipeline.record` and the sweeps make (the calls of
:class:`~lrexp.tracking.interface.TrackingCalls`) then goes to the tracking process, in order, and
the run is opened, logged and ended there. Calls that return nothing are pipelined: the training
process waits only for an answer it needs (the run's id, a model's id) and for the run's end, so
the CLI returns once everything is stored, and an error in a pipelined call is raised at the next
call that waits.

A multirun with lrexp's batched launcher (``-m hydra/launcher=vmap``) gets two such processes,
its :func:`writers`; the second is forked from the first once that one has imported MLflow. The
sweep's parent run and its summary go through the first; the children, trained together, are
logged side by side, one thread of the launching process per writer (:func:`bind`).

The tracking process ignores Ctrl-C and SIGTERM: the training process decides how its run ends
(KILLED, with the reason) and tells it. If the training process dies without ending its run
(SIGKILL, out of memory), the tracking process sees the connection close (or the process gone)
and ends the run KILLED. Messages travel as whole frames and every wait is bounded (see
:mod:`lrexp.tracking.channel`): neither process can wait forever on the other.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lrexp.tracking import hooks
from lrexp.tracking.channel import ACTIVE, ORPHANED, Channel, TrackerError  # noqa: F401
from lrexp.tracking.interface import TrackingCalls

if TYPE_CHECKING:
    import numpy as np

# Hydra options that print or exit without a run, and the multirun flag: no tracking process.
NO_RUN = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--shell-completion"}
MULTIRUN = {"-m", "--multirun"}
VMAP = "hydra/launcher=vmap"  # the batched launcher: its sweep's runs are logged from here
WRITERS = 2  # tracking processes for a batched sweep: its children are logged two at a time


class Tracker(Channel):
    """The training side of a tracking process: each :class:`TrackingCalls` method here sends
    that call to the process, which carries it out with :mod:`lrexp.tracking.local`."""

    _children_pending: Callable[[], Any] | None = None  # the last log_children, until stored

    # --- the calls (TrackingCalls), sent to the tracking process ---
    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", params)

    def log_batch(
        self,
        run_id: str,
        *,
        curves: Mapping[str, Sequence[float]] = {},
        steps: Sequence[int] | None = None,
        scalars: Mapping[str, float | None] = {},
        params: Mapping[str, Any] = {},
        tags: Mapping[str, str] = {},
        model_id: str | None = None,
    ) -> None:
        self._call(
            "log_batch", run_id, curves=curves, steps=steps, scalars=scalars, params=params,
            tags=tags, model_id=model_id,
        )  # fmt: skip

    def log_metrics(
        self,
        run_id: str,
        series: Mapping[str, Sequence[float]],
        scalars: Mapping[str, float],
        steps: Sequence[int] | None = None,
    ) -> None:
        self._call("log_metrics", run_id, series, scalars, steps)

    def log_files(self, run_id: str, files: Mapping[str, str]) -> None:
        self._call("log_files", run_id, files)

    def log_dataset(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        features: Sequence[str],
        target: str,
        name: str,
        source: str,
        context: str = "training",
    ) -> None:
        self._call(
            "log_dataset", X, y, features=features, target=target, name=name, source=source,
            context=context,
        )  # fmt: skip

    def log_model(
        self,
        theta: Sequence[float],
        features: Sequence[str],
        example: Sequence[Sequence[float | str]],
        *,
        categories: Mapping[str, Sequence[str]] = {},
        run_id: str | None = None,
        uri: str | None = None,
        step: int = 0,
    ) -> str:
        return self._call(
            "log_model", theta, features, example, categories=categories, run_id=run_id, uri=uri,
            step=step,
        )  # fmt: skip

    def set_tags(self, uri: str, run_id: str, tags: Mapping[str, str]) -> None:
        self._call("set_tags", uri, run_id, tags)

    def create_run(self, uri: str, exp_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        return self._call("create_run", uri, exp_id, run_name, tags)

    def end_run(self, uri: str, run_id: str, status: str = "FINISHED") -> None:
        self._call("end_run", uri, run_id, status)

    def open_sweep(
        self, uri: str, experiment: str, run_name: str, tags: Mapping[str, str]
    ) -> tuple[str, str]:
        return self.submit_open_sweep(uri, experiment, run_name, tags)()

    def submit_open_sweep(
        self, uri: str, experiment: str, run_name: str, tags: Mapping[str, str]
    ) -> Callable[[], tuple[str, str]]:
        """:meth:`open_sweep` without waiting: returns a function that waits for its ids."""
        return self._submit("open_sweep", uri, experiment, run_name, tags)

    def log_children(
        self,
        uri: str,
        exp_id: str,
        children: Sequence[Mapping[str, Any]],
        datasets: Mapping[str, Mapping[str, Any]] = {},
    ) -> None:
        """Sent without waiting for it, but only once the batch sent before is stored: at most
        one batch of children waits here or there (memory stays flat, however many batches)."""
        if self._children_pending is not None:
            self._children_pending()
        self._children_pending = self._submit("log_children", uri, exp_id, children, datasets)

    def summarize_sweep(
        self, uri: str, exp_id: str, parent: str, *, best_model: bool = False
    ) -> str:
        return self._call("summarize_sweep", uri, exp_id, parent, best_model=best_model)

    def stop_heartbeat(self, run_id: str) -> None:
        self._call("stop_heartbeat", run_id)

    def find_finished(
        self, uri: str, experiment: str, tag: str, value: str
    ) -> dict[str, Any] | None:
        return self._call("find_finished", uri, experiment, tag, value)

    def run_status(self, uri: str, run_id: str) -> str:
        return self._call("run_status", uri, run_id)

    def run_experiment_id(self, uri: str, run_id: str) -> str:
        return self._call("run_experiment_id", uri, run_id)


_current: Tracker | None = None  # the tracking process of this (CLI) process, once started
_more: list[Tracker] = []  # a batched sweep's other tracking processes (see writers)
_bound = threading.local()  # a thread's own tracking process (see bind)


def current() -> Tracker | None:
    """The tracking process this thread logs to (see :func:`bind`), else the one this process
    started, while it is alive; else None."""
    t = getattr(_bound, "tracker", None) or _current
    return t if t is not None and t.alive() else None


def writers() -> list[Tracker]:
    """The tracking processes that may log a sweep's runs side by side, one thread each."""
    return [t for t in (_current, *_more) if t is not None and t.alive()]


@contextmanager
def bind(t: Tracker) -> Iterator[Tracker]:
    """Within the block, this thread logs to ``t`` (:func:`current` returns it here)."""
    _bound.tracker = t
    try:
        yield t
    finally:
        _bound.tracker = None


def calls() -> TrackingCalls:
    """Where runs are written: this thread's tracking process (see :func:`current`), else
    :mod:`lrexp.tracking.local` here (imported only now: MLflow is slow to import)."""
    tracker = current()
    if tracker is not None:
        return tracker
    from lrexp.tracking import local

    return local  # a module of the same calls


def start(more: int = 0) -> Tracker:
    """Start this process's tracking process, and ``more`` others for a batched sweep (all
    ended by :func:`stop`, or at exit)."""
    global _current
    if _current is None:
        _current = Tracker(forks=more)
        _more.extend(_current.forked)
        atexit.register(stop)
        if _sync not in hooks.BEFORE_PAUSE:
            hooks.BEFORE_PAUSE.append(_sync)
    return _current


def _sync() -> None:
    """Wait until this thread's tracking process has carried out everything sent to it."""
    tracker = current()
    if tracker is not None:
        tracker.sync()


def single_run(argv: list[str]) -> bool:
    """Whether a CLI call with these arguments trains one run (no multirun, help or config dump)."""
    options = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    return not options & (NO_RUN | MULTIRUN) and "hydra.mode=MULTIRUN" not in {
        a.replace(" ", "") for a in argv
    }


def batched_sweep(argv: list[str]) -> bool:
    """Whether a CLI call with these arguments is a multirun with lrexp's batched launcher."""
    args = {a.replace(" ", "") for a in argv}
    multirun = bool(args & MULTIRUN) or "hydra.mode=MULTIRUN" in args
    return multirun and VMAP in args and not args & NO_RUN


def start_for(argv: list[str]) -> Tracker | None:
    """Start the tracking process for a CLI call that trains and tracks one run, and the
    :data:`WRITERS` of a batched sweep (``LREXP_TRACKING_PROCESS=0`` tracks in the training
    process instead)."""
    if "tracking.enabled=false" in {a.replace(" ", "") for a in argv}:
        return None
    if os.environ.get("LREXP_TRACKING_PROCESS", "1") == "0":
        return None
    if single_run(argv):
        return start()
    if batched_sweep(argv):
        return start(more=WRITERS - 1)
    return None


def stop() -> None:
    """End this process's tracking processes, once they have stored everything they were sent."""
    global _current
    every = [t for t in (*_more, _current) if t is not None]  # forked ones first
    _current = None
    _more.clear()
    for t in every:
        t.stop()


@contextmanager
def process() -> Iterator[Tracker]:
    """Within the block, runs are tracked from a tracking process (started here)."""
    tracker = start()
    try:
        yield tracker
    finally:
        stop()
