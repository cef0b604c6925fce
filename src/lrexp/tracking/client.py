"""Track a run from a second process, so that MLflow's start-up overlaps JAX's and the training.

A tracked ``python -m lrexp.train`` spends about as long importing MLflow, opening its store and
logging a first model as it spends importing JAX, composing the config and training. On two
cores the two can run side by side. The CLI starts a tracking process before it imports JAX; that
process imports MLflow (never JAX) and prepares what a run's first calls need, while the training
process works. Every call that :mod:`lrexp.record` makes on :mod:`lrexp.tracking` then goes to
the tracking process, in order, and the run is opened, logged and ended there. Calls that return
nothing are pipelined: the training process waits only for an answer it needs (the run's id, a
model's id) and for the run's end, so the CLI returns once everything is stored, and an error in
a pipelined call is raised at the next call that waits.

A multirun with lrexp's batched launcher (``-m hydra/launcher=vmap``) gets two such processes,
its :func:`writers`; the second is forked from the first once that one has imported MLflow. The
sweep's parent run and its summary go through the first; the children, trained together, are
logged side by side, one thread of the launching process per writer (:func:`bind`).

The tracking process ignores Ctrl-C and SIGTERM: the training process decides how its run ends
(KILLED, with the reason) and tells it. If the training process dies without ending its run
(SIGKILL, out of memory), the tracking process sees the pipe close and ends the run KILLED.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from lrexp.tracking import signals

# Calls of lrexp.tracking that return nothing: sent without waiting for the tracking process.
PIPELINED = frozenset(
    {"log_params", "log_batch", "log_metrics", "log_files", "log_dataset", "log_text", "set_tags"}
)
ACTIVE = "lrexp:active-run"  # stands for the open run's id until the tracking process has made it
ORPHANED = "the training process ended without ending its run (killed, or out of memory)"
# Hydra options that print or exit without a run, and the multirun flag: no tracking process.
NO_RUN = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--shell-completion"}
MULTIRUN = {"-m", "--multirun"}
VMAP = "hydra/launcher=vmap"  # the batched launcher: its sweep's runs are logged from here
WRITERS = 2  # tracking processes for a batched sweep: its children are logged two at a time


class TrackerError(RuntimeError):
    """The tracking process went away, or failed in a way that cannot be passed back."""


class Tracker:
    """The training side: stands in for :mod:`lrexp.tracking`, calling it in the tracking
    process. ``tracker.log_params(...)`` runs ``lrexp.tracking.log_params(...)`` there."""

    def __init__(self, forks: int = 0, *, _conn: Connection | None = None) -> None:
        """Start a tracking process; with ``forks``, that many more (:attr:`forked`), forked
        from it once it has imported MLflow: one import serves them all."""
        self._proc: subprocess.Popen | None = None
        self.forked: list[Tracker] = []
        if _conn is None:
            pairs = [socket.socketpair() for _ in range(1 + forks)]
            fds = [theirs.fileno() for _, theirs in pairs]
            serve_code = f"from lrexp.tracking.server import serve; serve({fds[0]}, {fds[1:]})"
            self._proc = subprocess.Popen(  # given this process's argv: MLflow's run source
                [sys.executable, "-c", serve_code, *sys.argv],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
            conns = []
            for ours, theirs in pairs:
                theirs.close()
                conns.append(Connection(ours.detach()))
            _conn = conns[0]
            self.forked = [Tracker(_conn=c) for c in conns[1:]]
        self._conn = _conn
        self._gone = False  # a forked process's end, seen on its connection
        self._sent = self._read = 0  # requests sent, and replies read
        self._open_request: int | None = None  # the request that opens the run
        self._awaited: dict[int, Any] = {}  # submitted requests → their values, once read
        self.run_id: str | None = None  # the open run's id, once its reply is read
        self.used = False  # it was sent work (else it is killed at once when stopped)

    def alive(self) -> bool:
        if self._proc is None:  # forked by the tracking process: not this process's child
            return not self._gone
        return self._proc.poll() is None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._send(("call", name, args, kwargs))
            return None if name in PIPELINED else self._collect(block=True)

        return call

    def submit(self, name: str, *args: Any, **kwargs: Any) -> Callable[[], Any]:
        """Send a call without waiting; return a function that waits for its value."""
        self._send(("call", name, args, kwargs))
        request = self._sent
        self._awaited[request] = None

        def result() -> Any:
            self._collect(block=True, until=request)
            return self._awaited.pop(request)

        return result

    def invoke(self, target: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``target`` (``"lrexp.module:function"``) in the tracking process; return its
        value. For work that reads and writes the store at length, such as a sweep's summary."""
        return self.submit(target, *args, **kwargs)()

    def active_run_id(self) -> str:
        """The id of the open run, or :data:`ACTIVE` (which the tracking process reads as that
        id) while the run is still being made."""
        return self.run_id or ACTIVE

    def resolve(self, run_id: str) -> str:
        """``run_id`` itself, or for :data:`ACTIVE` the open run's id (waiting for it)."""
        if run_id != ACTIVE:
            return run_id
        while self.run_id is None and self._open_request is not None:
            self._collect(block=True, until=self._open_request)
        if self.run_id is None:
            raise TrackerError("no run is open")
        return self.run_id

    @contextmanager
    def run(
        self,
        uri: str,
        experiment: str | None,
        run_name: str,
        tags: dict[str, str],
        *,
        exp_id: str | None = None,
    ) -> Iterator[str]:
        """As :func:`lrexp.tracking.run`, but yields :data:`ACTIVE` at once: the run is made
        while this process trains (:meth:`resolve` gives its id). It ends as the block does."""
        self._send(("open", (uri, experiment, run_name, dict(tags)), {"exp_id": exp_id}))
        self._open_request = self._sent
        try:
            yield ACTIVE
        except BaseException as e:
            self._close(signals.ending(e, traceback.format_exc()))
            raise
        self._close(("FINISHED", None, None))

    def _close(self, ending: tuple[str, str | None, str | None]) -> None:
        self._send(("close", ending, {}), check=False)  # sent even after a failed pipelined call
        self._collect(block=True)
        self.run_id = self._open_request = None

    def _send(self, message: tuple, *, check: bool = True) -> None:
        if check:
            self._collect(block=False)
        try:
            self._conn.send(message)
        except OSError as e:
            self._gone = True
            raise TrackerError(f"the tracking process has gone away ({e})") from e
        self._sent += 1
        self.used = True

    def _collect(self, *, block: bool, until: int | None = None) -> Any:
        """Read the replies that are in (if ``block``, those up to request ``until``, or all);
        raise the first error, and return the last value read."""
        value, last = None, self._sent if until is None else until
        while self._read < last and (block or self._conn.poll()):
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError) as e:
                self._read, self._gone = self._sent, True
                raise TrackerError("the tracking process ended unexpectedly") from e
            self._read += 1
            if kind == "err":
                self._awaited.pop(self._read, None)
                raise _unpack(value)
            if self._read == self._open_request:
                self.run_id = value
            if self._read in self._awaited:
                self._awaited[self._read] = value
        return value

    def stop(self, timeout: float = 60.0) -> None:
        """Let the tracking process finish what was sent, and end it."""
        if not self.used and self._proc is not None:  # it never had work: no need to wait
            self._proc.kill()
        with contextlib.suppress(Exception):
            self._collect(block=True)
        self._conn.close()
        self._gone = True
        if self._proc is None:  # a forked one ends as its connection closes
            return
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


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


def tracking() -> Any:
    """Where runs are written: :mod:`lrexp.tracking` in this thread's tracking process (see
    :func:`current`), else here (imported only now: MLflow is slow to import)."""
    import importlib

    return current() or importlib.import_module("lrexp.tracking.local")


def start(more: int = 0) -> Tracker:
    """Start this process's tracking process, and ``more`` others for a batched sweep (all
    ended by :func:`stop`, or at exit)."""
    global _current
    if _current is None:
        _current = Tracker(forks=more)
        _more.extend(_current.forked)
        atexit.register(stop)
    return _current


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


def _unpack(data: bytes) -> BaseException:
    try:
        return pickle.loads(data)
    except Exception as e:
        return TrackerError(f"the tracking process failed, and its error could not be read: {e}")
