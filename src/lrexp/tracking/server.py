"""The tracking process of :mod:`lrexp.tracker`: it carries out the training process's calls
on :mod:`lrexp.tracking`, in order, and never leaves the run it opened RUNNING."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from lrexp.tracking import signals
from lrexp.tracking.client import ACTIVE, ORPHANED, TrackerError


def serve(fd: int, spares: list[int] | None = None) -> None:
    """Run the tracking process: carry out the requests arriving on ``fd`` until it closes.

    With ``spares``, fork one tracking process for each, serving it, once MLflow is imported
    and warmed up (before any store is opened: no connection crosses a fork)."""
    sys.argv = sys.argv[1:]  # the training process's: the run's source (mlflow.source.name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training process decides how runs end
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for noisy in ("mlflow.store.db.utils", "alembic", "mlflow.pyfunc", "mlflow.models"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # As lrexp.store.check_server sets them in the process that calls MLflow: fail fast on an
    # unreachable server rather than retry each call for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from lrexp.tracking import local as tracking

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
                _end(tracking, state, "KILLED", ORPHANED)
                break
            conn.send(_carry_out(tracking, state, *_request(request)))
    except BaseException as e:  # never leave the run RUNNING, nor let MLflow's exit hook FINISH it
        _end(tracking, state, "FAILED", f"lrexp's tracking process failed: {signals.reason(e)}")
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


def _carry_out(tracking: Any, state: dict[str, Any], kind: str, what: Any, args, kwargs) -> tuple:
    """Carry out one request; the reply: ("ok", value) or ("err", the pickled exception)."""
    try:
        if kind == "open":
            value = tracking.open_run(*args, **kwargs)
            state["open"] = True
            state["heartbeat"] = tracking.Heartbeat(args[0], value).__enter__()
        elif kind == "close":
            _stop_heartbeat(state)
            state["open"] = False  # close_run ends the run even when recording why fails
            value = tracking.close_run(*what)
        else:
            args = tuple(_active(a, tracking) for a in args)
            kwargs = {k: _active(v, tracking) for k, v in kwargs.items()}
            value = _function(tracking, what)(*args, **kwargs)
        return ("ok", value)
    except Exception as e:
        return ("err", _pack(e))


def _function(tracking: Any, what: str) -> Callable[..., Any]:
    """``lrexp.tracking``'s function ``what``, or for ``"lrexp.module:function"`` that one."""
    if ":" not in what:
        return getattr(tracking, what)
    module, name = what.split(":")
    if not module.startswith("lrexp."):
        raise ValueError(f"not one of lrexp's functions: {what!r}")
    return getattr(importlib.import_module(module), name)


def _end(tracking: Any, state: dict[str, Any], status: str, reason: str) -> None:
    """End the run left open, if there is one, with ``status`` and ``reason``."""
    _stop_heartbeat(state)
    if state["open"]:
        state["open"] = False
        with contextlib.suppress(Exception):
            tracking.close_run(status, reason)


def _stop_heartbeat(state: dict[str, Any]) -> None:
    if state["heartbeat"] is not None:
        state["heartbeat"].__exit__(None, None, None)
        state["heartbeat"] = None


def _active(arg: Any, tracking: Any) -> Any:
    return tracking.active_run_id() if isinstance(arg, str) and arg == ACTIVE else arg


def _request(message: tuple) -> tuple[str, Any, tuple, dict]:
    kind, what, *rest = message
    if kind == "open":
        return kind, None, what, rest[0]
    if kind == "close":
        return kind, what, (), {}
    return kind, what, rest[0], rest[1]


def _warm_up_steps() -> list[Callable[[], None]]:
    """What a run's calls would otherwise do on the way, in the order they need it: imports,
    and MLflow's map from modules to installed packages, which ``log_model`` consults to check
    the model's requirements against what is installed."""

    def store() -> None:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    def dataset() -> None:
        import mlflow.data.pandas_dataset  # noqa: F401

    def model() -> None:
        import mlflow.pyfunc  # noqa: F401
        from mlflow.utils import requirements_utils

        # MLflow builds the map by reading the file list of every installed distribution (0.3 s
        # to over 1 s). This process logs only lrexp's model, whose requirements are these three.
        with contextlib.suppress(Exception):  # a private cache: only its time is at stake
            if requirements_utils._MODULES_TO_PACKAGES is None:
                requirements_utils._MODULES_TO_PACKAGES = {
                    p: [p] for p in ("mlflow", "numpy", "pandas")
                }

    return [store, dataset, model]


def _pack(e: BaseException) -> bytes:
    with contextlib.suppress(Exception):
        e.add_note("(in lrexp's tracking process)\n" + "".join(traceback.format_exception(e)))
        return pickle.dumps(e)
    return pickle.dumps(TrackerError(f"{type(e).__name__}: {e}"))
