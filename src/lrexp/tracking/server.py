"""The tracking process (see :mod:`lrexp.tracking.client`): it carries out the training process's
calls (:class:`~lrexp.tracking.interface.TrackingCalls`) with :mod:`lrexp.tracking.local`, in order,
and never leaves the run it opened RUNNING. It imports MLflow, never JAX."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from lrexp import quiet_libraries
from lrexp.tracking import signals, store
from lrexp.tracking.channel import ACTIVE, ORPHANED, TrackerError
from lrexp.tracking.interface import CALLS


def serve(fd: int, spares: list[int] | None = None) -> None:
    """Run the tracking process: carry out the requests arriving on ``fd`` until it closes.

    With ``spares``, fork one tracking process for each, serving it, once MLflow is imported
    and warmed up (before any store is opened: no connection crosses a fork)."""
    sys.argv = sys.argv[1:]  # the training process's: the run's source (mlflow.source.name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training process decides how runs end
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    quiet_libraries()
    store.fail_fast_http()  # an unreachable server fails in seconds, not minutes of retries
    from lrexp.tracking import lifecycle

    warm_up = _warm_up_steps()
    if spares:
        for step in warm_up:
            step()
        warm_up = []
        fd = _fork(fd, spares)
    conn = Connection(fd)
    state: dict[str, Any] = {"open": False, "heartbeat": None}
    try:
        while True:
            while not conn.poll(0) and warm_up:  # idle: prepare the first run's calls
                warm_up.pop(0)()
            try:
                request = conn.recv()
            except (EOFError, OSError):  # closed, or reset with replies unread: it is gone
                _end(lifecycle, state, "KILLED", ORPHANED)
                break
            conn.send(_carry_out(lifecycle, state, *_request(request)))
    except BaseException as e:  # never leave the run RUNNING, nor let MLflow's exit hook FINISH it
        _end(lifecycle, state, "FAILED", f"lrexp's tracking process failed: {signals.reason(e)}")
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown: nothing is left to do


def _fork(fd: int, spares: list[int]) -> int:
    """Fork a process for each spare connection; return the one this process serves."""
    for i, spare in enumerate(spares):
        if os.fork() == 0:  # the child serves ``spare`` alone
            for other in [fd, *spares[i + 1 :]]:
                os.close(other)
            return spare
        os.close(spare)
    return fd


def _carry_out(lifecycle: Any, state: dict[str, Any], kind: str, what: Any, args, kwargs) -> tuple:
    """Carry out one request; the reply: ("ok", value) or ("err", the pickled exception)."""
    try:
        if kind == "open":
            value = lifecycle.open_run(*args, **kwargs)
            state["open"] = True
            state["heartbeat"] = lifecycle.Heartbeat(args[0], value).__enter__()
        elif kind == "close":
            _stop_heartbeat(state)
            state["open"] = False  # close_run ends the run even when recording why fails
            value = lifecycle.close_run(*what)
        else:
            args = tuple(_active(a) for a in args)
            kwargs = {k: _active(v) for k, v in kwargs.items()}
            value = _call(what)(*args, **kwargs)
        return ("ok", value)
    except Exception as e:
        return ("err", _pack(e))


def _call(name: str) -> Callable[..., Any]:
    """The local implementation of tracking call ``name`` (one of the interface's, no other)."""
    if name not in CALLS or name == "run":  # a run is opened and closed by its own requests
        raise ValueError(f"not a tracking call: {name!r}")
    from lrexp.tracking import local

    return getattr(local, name)


def _end(lifecycle: Any, state: dict[str, Any], status: str, reason: str) -> None:
    """End the run left open, if there is one, with ``status`` and ``reason``."""
    _stop_heartbeat(state)
    if state["open"]:
        state["open"] = False
        with contextlib.suppress(Exception):
            lifecycle.close_run(status, reason)


def _stop_heartbeat(state: dict[str, Any]) -> None:
    if state["heartbeat"] is not None:
        state["heartbeat"].__exit__(None, None, None)
        state["heartbeat"] = None


def _active(arg: Any) -> Any:
    """The open run's id where the training side sent :data:`ACTIVE` in its place."""
    if isinstance(arg, str) and arg == ACTIVE:
        from lrexp.tracking import writer

        return writer.active_run_id()
    return arg


def _request(message: tuple) -> tuple[str, Any, tuple, dict]:
    kind, what, *rest = message
    if kind == "open":
        return kind, None, what, rest[0]
    if kind == "close":
        return kind, what, (), {}
    return kind, what, rest[0], rest[1]


def _warm_up_steps() -> list[Callable[[], None]]:
    """What a run's calls would otherwise do on the way, in the order they need it: imports,
    and MLflow's map from modules to installed packages (see
    :func:`~lrexp.tracking.mlflow_private.assume_model_requirements`)."""

    def open_store() -> None:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    def dataset() -> None:
        import mlflow.data.pandas_dataset  # noqa: F401

    def model() -> None:
        import mlflow.pyfunc  # noqa: F401

        from lrexp.tracking import mlflow_private, writer

        mlflow_private.assume_model_requirements(writer.MODEL_REQUIREMENTS)

    return [open_store, dataset, model]


def _pack(e: BaseException) -> bytes:
    with contextlib.suppress(Exception):
        e.add_note("(in lrexp's tracking process)\n" + "".join(traceback.format_exception(e)))
        return pickle.dumps(e)
    return pickle.dumps(TrackerError(f"{type(e).__name__}: {e}"))
