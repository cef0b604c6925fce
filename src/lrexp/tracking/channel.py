"""The connection to one tracking process: requests framed in order, replies read back.

:class:`~lrexp.tracking.client.Tracker` adds the calls; this is how they travel. The training side
sends requests in order and reads their replies in order; a pipelined request's reply is read at
the next request that waits, which raises its error there.

Nothing here can deadlock. Each message is one frame (an 8-byte length, then the pickle),
written whole by a thread of its own and read back by another: a signal handler runs only in the
main thread, so one that raises (Ctrl-C, SIGTERM) never leaves a frame half-written or half-read.
The main thread only queues requests and waits for replies, each wait bounded
(:data:`REPLY_S`). The sending thread also sends a ping every :data:`PING_S` seconds: the
tracking process stamps the run's heartbeat only while it hears from this process (see
:mod:`lrexp.tracking.server`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lrexp.tracking import signals
from lrexp.tracking.frames import (  # noqa: F401  (re-exported: its users import them from here)
    HEADER,
    PING,
    PING_S,
    IncompleteFrame,
    _Link,
    _read,
    recv_frame,
    send_frame,
    write_frame,
)
from lrexp.tracking.interface import PIPELINED

ACTIVE = "lrexp:active-run"  # stands for the open run's id until the tracking process has made it
ORPHANED = "the training process ended without ending its run (killed, or out of memory)"
REPLY_S = float(os.environ.get("LREXP_REPLY_S", "600"))  # the longest wait for one reply
CLOSE_S = float(os.environ.get("LREXP_CLOSE_S", "8"))  # … for a run's end, after a stop signal


class TrackerError(RuntimeError):
    """The tracking process went away, or failed in a way that cannot be passed back."""


class Channel:
    """A tracking process and the connection to it."""

    def __init__(self, forks: int = 0, *, _sock: socket.socket | None = None) -> None:
        """Start a tracking process; with ``forks``, that many more (:attr:`forked`), forked
        from it once it has imported MLflow: one import serves them all."""
        self._proc: subprocess.Popen | None = None
        self.forked: list[Channel] = []
        if _sock is None:
            pairs = [socket.socketpair() for _ in range(1 + forks)]
            fds = [theirs.fileno() for _, theirs in pairs]
            serve_code = (
                "from lrexp.tracking.server import serve; "
                f"serve({fds[0]}, {fds[1:]}, {os.getpid()})"
            )
            self._proc = subprocess.Popen(  # given this process's argv: MLflow's run source
                [sys.executable, "-c", serve_code, *sys.argv],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
            for _, theirs in pairs:
                theirs.close()
            _sock = pairs[0][0]
            self.forked = [type(self)(_sock=ours) for ours, _ in pairs[1:]]
        self._link = _Link(_sock)
        self._gone = False  # the tracking process's end, seen on the connection
        self._sent = self._read = 0  # requests sent, and replies read
        self._open_request: int | None = None  # the request that opens the run
        self._awaited: dict[int, Any] = {}  # submitted requests → their values, once read
        self.run_id: str | None = None  # the open run's id, once its reply is read
        self.used = False  # it was sent work (else it is killed at once when stopped)
        self._hurry = False  # a stop signal ended the run: the process exits without delay

    def alive(self) -> bool:
        if self._gone:
            return False
        return self._proc is None or self._proc.poll() is None

    def sync(self) -> None:
        """Wait until every request sent so far is carried out (raising the first error)."""
        self._collect(block=True)

    # --- how calls travel ---
    def _call(self, call: str, /, *args: Any, **kwargs: Any) -> Any:
        """Send tracking call ``call``; wait for its value unless it is pipelined."""
        self._send(("call", call, args, kwargs))
        return None if call in PIPELINED else self._collect(block=True)

    def _submit(self, call: str, /, *args: Any, **kwargs: Any) -> Callable[[], Any]:
        """Send tracking call ``call`` without waiting; return a function that waits for its
        value."""
        self._send(("call", call, args, kwargs))
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
        does: after a stop signal or a failure of the tracking process, waiting at most
        :data:`CLOSE_S` for the tracking process to end it."""
        self._send(("open", (uri, experiment, run_name, dict(tags)), {"exp_id": exp_id}))
        self._open_request = self._sent
        try:
            yield ACTIVE
            signals.raise_pending()  # a stop request whose exception was dropped on the way
        except BaseException as e:
            signals.seen(e)
            bounded = isinstance(e, (*signals.STOPS, TrackerError))
            self._hurry = self._hurry or bounded
            with contextlib.suppress(Exception):  # the error that stopped the run is the one told
                self._close(
                    signals.ending(e, traceback.format_exc()), CLOSE_S if bounded else REPLY_S
                )
            raise
        self._close(("FINISHED", None, None), REPLY_S)

    def _close(self, ending: tuple[str, str | None, str | None], wait: float) -> None:
        self._open_request = None
        if self._gone:
            return
        self._send(("close", ending, {}), check=False)  # sent even after a failed pipelined call
        try:
            self._collect(block=True, wait=wait)
        finally:
            self.run_id = None

    def _send(self, message: tuple, *, check: bool = True) -> None:
        if check:
            signals.raise_pending()
            self._collect(block=False)
        if self._gone or self._link.broken is not None:
            self._gone = True
            raise TrackerError(f"the tracking process has gone away ({self._link.broken})")
        # pickled here, as the call is made: the caller may change its arguments afterwards
        self._link.outbox.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        self._sent += 1
        self.used = True

    def _collect(self, *, block: bool, until: int | None = None, wait: float = REPLY_S) -> Any:
        """Read the replies that are in (if ``block``, those up to request ``until``, or all,
        each within ``wait`` seconds); raise the first error, and return the last value read."""
        value, last = None, self._sent if until is None else until
        while self._read < last:
            try:
                reply = (
                    self._link.inbox.get(timeout=wait) if block else self._link.inbox.get_nowait()
                )
            except queue.Empty:
                if not block:
                    break
                self._gone = True  # its replies are out of step now: no more requests
                raise TrackerError(
                    f"the tracking process did not answer within {wait:.0f} s (a stuck store?)"
                ) from None
            kind, value = reply
            if kind == "gone":
                self._read, self._gone = self._sent, True
                raise TrackerError("the tracking process ended unexpectedly") from value
            self._read += 1
            if kind == "err":
                self._awaited.pop(self._read, None)
                raise _unpack(value)
            if self._read == self._open_request:
                self.run_id = value
            if self._read in self._awaited:
                self._awaited[self._read] = value
        return value

    def stop(self, timeout: float | None = None) -> None:
        """Let the tracking process finish what was sent, and end the connection: within
        ``timeout`` s (default :data:`REPLY_S`, or :data:`CLOSE_S` once a stop signal or a lost
        tracking process ended the run). A tracking process still busy then is left to finish on
        its own: it ends its run as it sees the connection close, and exits."""
        if timeout is None:
            timeout = CLOSE_S if self._hurry else REPLY_S
        deadline = time.monotonic() + timeout
        if not self.used and self._proc is not None:  # it never had work: no need to wait
            self._proc.kill()
        elif not self._gone:
            with contextlib.suppress(Exception):  # its errors were raised, or are moot now
                self._collect(block=True, wait=timeout)
        self._link.close(timeout=max(0.0, deadline - time.monotonic()))
        self._gone = True
        if self._proc is None or not self.used:  # a forked one ends as its connection closes
            if self._proc is not None:
                self._proc.wait()
            return
        # Everything was answered: all it may have left is to end a run it could not end yet.
        with contextlib.suppress(subprocess.TimeoutExpired):  # busy: it ends its run, and exits
            self._proc.wait(min(CLOSE_S, max(0.1, deadline - time.monotonic())))


def _unpack(data: bytes) -> BaseException:
    try:
        return pickle.loads(data)
    except Exception as e:
        return TrackerError(f"the tracking process failed, and its error could not be read: {e}")
