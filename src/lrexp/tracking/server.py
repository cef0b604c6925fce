"""The tracking process (see :mod:`lrexp.tracking.client`): it carries out the training process's
calls (:class:`~lrexp.tracking.interface.TrackingCalls`) with :mod:`lrexp.tracking.local`, in order,
and never leaves the run it opened RUNNING. It imports MLflow, never JAX."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrexp import quiet_libraries
from lrexp.tracking import hooks, signals, store
from lrexp.tracking.channel import (
    ACTIVE,
    ORPHANED,
    PING,
    IncompleteFrame,
    TrackerError,
    recv_frame,
    send_frame,
)
from lrexp.tracking.interface import CALLS

SILENT_S = float(os.environ.get("LREXP_SILENT_S", "30"))  # no ping for this long: no heartbeat
EXIT_RETRY_S = float(os.environ.get("LREXP_EXIT_RETRY_S", "120"))  # to end a run, at the end
FRAME_S = float(os.environ.get("LREXP_FRAME_S", "30"))  # a begun message is whole within this


def serve(fd: int, spares: list[int] | None = None, trainer: int | None = None) -> None:
    """Run the tracking process: carry out the requests arriving on ``fd`` until it closes.

    With ``spares``, fork one tracking process for each, serving it, once MLflow is imported
    and warmed up (before any store is opened: no connection crosses a fork). ``trainer`` is the
    training process's pid: when it is gone, or silent (no request, no ping) for
    :data:`SILENT_S` while nothing is being carried out, the run's heartbeat stops."""
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
    sock = socket.socket(fileno=fd)
    peer = Peer(trainer)
    state: dict[str, Any] = {"open": False, "heartbeat": None, "peer": peer}
    try:
        _loop(sock, lifecycle, state, warm_up)
    except BaseException as e:  # never leave the run RUNNING, nor let MLflow's exit hook FINISH it
        _end(lifecycle, state, "FAILED", f"lrexp's tracking process failed: {signals.reason(e)}")
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown: nothing is left to do


def _loop(sock: socket.socket, lifecycle: Any, state: dict[str, Any], warm_up: list) -> None:
    """Carry out requests until the training process has gone; then end its run if open."""
    peer: Peer = state["peer"]
    while True:
        while warm_up and not select.select([sock], [], [], 0)[0]:  # idle: prepare a run's calls
            warm_up.pop(0)()
        while not select.select([sock], [], [], 1.0)[0]:
            if peer.gone():  # nothing more will come (the connection may outlive it)
                _end(lifecycle, state, "KILLED", ORPHANED)
                return
        try:
            message = recv_frame(sock, FRAME_S)
        except (EOFError, ConnectionError):  # closed, or reset: it is gone
            _end(lifecycle, state, "KILLED", ORPHANED)
            return
        except (IncompleteFrame, OSError, pickle.UnpicklingError) as e:
            _end(lifecycle, state, "KILLED", f"{ORPHANED}; its last message was cut short ({e})")
            return
        peer.heard()
        if message == PING:
            continue
        peer.busy = True
        try:
            reply = _carry_out(lifecycle, state, *_request(message))
        finally:
            peer.heard()
            peer.busy = False
        try:
            send_frame(sock, reply)
        except OSError:  # it went away while this was carried out
            _end(lifecycle, state, "KILLED", ORPHANED)
            return


class Peer:
    """The training process, as the tracking process sees it."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.last, self.busy = pid, time.monotonic(), False

    def heard(self) -> None:
        self.last = time.monotonic()

    def gone(self) -> bool:
        """Whether the training process has ended (a zombie not yet reaped counts as ended)."""
        if self.pid is None or os.getppid() == self.pid:  # the first tracking process: its child
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            return stat.rpartition(")")[2].split()[0] == "Z"
        return False

    def alive(self) -> bool:
        """Whether the run's heartbeat may go on: the training process lives, and was heard
        from lately or waits for a call being carried out."""
        return not self.gone() and (self.busy or time.monotonic() - self.last < SILENT_S)


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
            state.update(open=True, uri=args[0], run_id=value)
            beat = lifecycle.Heartbeat(args[0], value, alive=state["peer"].alive)
            state["heartbeat"] = beat.__enter__()
        elif kind == "close":
            _stop_heartbeat(state)
            state["ending"] = what  # if even the last resort fails, the exit path tries again
            value = lifecycle.close_run(*what, uri=state.get("uri"), run_id=state.get("run_id"))
            state["open"] = False
        else:
            if what == "log_model":
                hooks.pause_at("model")
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
    """End the run left open, if there is one, with ``status`` and ``reason`` (or as it was
    asked to end, where that failed)."""
    _stop_heartbeat(state)
    if state["open"]:
        state["open"] = False
        status, reason = (state.get("ending") or (status, reason))[:2]
        deadline = time.monotonic() + EXIT_RETRY_S
        while True:  # the store may be locked or full for a while yet: keep trying, bounded
            try:
                lifecycle.close_run(status, reason, uri=state["uri"], run_id=state["run_id"])
                return
            except Exception:
                if time.monotonic() > deadline:
                    return  # left to ``python -m lrexp.runs reap`` (its heartbeat has stopped)
                time.sleep(1.0)


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
