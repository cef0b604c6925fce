"""The connection to one tracking process: requests framed in order, replies read back.

:class:`~lrexp.tracking.client.Tracker` adds the calls; this is how they travel. The training side
sends requests in order and reads their replies in order; a pipelined request's reply is read at
the next request that waits, which raises its error there.
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from lrexp.tracking import signals
from lrexp.tracking.interface import PIPELINED

ACTIVE = "lrexp:active-run"  # stands for the open run's id until the tracking process has made it
ORPHANED = "the training process ended without ending its run (killed, or out of memory)"


class TrackerError(RuntimeError):
    """The tracking process went away, or failed in a way that cannot be passed back."""


class Channel:
    """A tracking process and the connection to it."""

    def __init__(self, forks: int = 0, *, _conn: Connection | None = None) -> None:
        """Start a tracking process; with ``forks``, that many more (:attr:`forked`), forked
        from it once it has imported MLflow: one import serves them all."""
        self._proc: subprocess.Popen | None = None
        self.forked: list[Channel] = []
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
            self.forked = [type(self)(_conn=c) for c in conns[1:]]
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

    # --- how calls travel ---
    def _call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Send call ``name``; wait for its value unless it is pipelined."""
        self._send(("call", name, args, kwargs))
        return None if name in PIPELINED else self._collect(block=True)

    def _submit(self, name: str, *args: Any, **kwargs: Any) -> Callable[[], Any]:
        """Send call ``name`` without waiting; return a function that waits for its value."""
        self._send(("call", name, args, kwargs))
        request = self._sent
        self._awaited[request] = None

        def result() -> Any:
            self._collect(block=True, until=request)
            return self._awaited.pop(request)

        return result

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
        """As :func:`lrexp.tracking.lifecycle.run`, but yields :data:`ACTIVE` at once: the run
        is made while this process trains (:meth:`resolve` gives its id). It ends as the block
        does."""
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


def _unpack(data: bytes) -> BaseException:
    try:
        return pickle.loads(data)
    except Exception as e:
        return TrackerError(f"the tracking process failed, and its error could not be read: {e}")
