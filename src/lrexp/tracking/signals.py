"""Stopping requests from outside: SIGTERM (schedulers, ``docker stop``) raises like Ctrl-C does.

Python runs signal handlers between bytecodes, so a handler that raises stops a run at the end of
the compiled chunk in flight (a chunk is sized to take well under a second). A handler can also
run inside a garbage-collection callback (JAX has one), where Python prints the exception and
drops it: so the handlers here also keep the request (:func:`raise_pending`), and a run that
ends with a stop request still pending ends KILLED all the same.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(BaseException):
    """SIGTERM arrived: stop now, record the run as KILLED, keep what it logged."""


class Orphaned(Terminated):
    """The process that launched this one (a sweep's launcher) is gone: stop as for SIGTERM."""


STOPS = (KeyboardInterrupt, Terminated)  # requests to stop: the run ends KILLED, not FAILED
_pending: list[BaseException] = []  # a stop request not yet seen through to a run's end
_orphaned: list[str] = []  # why this process is orphaned, once its watchdog found it so
_everywhere: list[BaseException] = []  # a stop that other threads honour too (see stop_threads)
STOP_ASKED = threading.Event()  # set by the first SIGINT or SIGTERM that raised here


def raise_terminated(signum, frame) -> None:
    _pending[:] = [Orphaned(_orphaned[0]) if _orphaned else Terminated("terminated by SIGTERM")]
    STOP_ASKED.set()
    raise _pending[0]


def orphan(why: str) -> None:
    """From now on SIGTERM (sent by this process's own watchdog) means :class:`Orphaned`."""
    _orphaned[:] = [why]


def stop_threads(e: BaseException | None) -> None:
    """Make every other thread raise a copy of ``e`` at its next tracking call (its run then
    ends KILLED with that reason), e.g. a sweep's logging threads after Ctrl-C; None: no more."""
    _everywhere[:] = [] if e is None else [e]


def raise_interrupted(signum, frame) -> None:
    _pending[:] = [KeyboardInterrupt()]
    STOP_ASKED.set()
    raise _pending[0]


def raise_pending() -> None:
    """Raise the stop request that a signal made but that did not propagate (dropped where
    the handler ran); nothing if there is none, or while a stop is being handled (the partial
    record of an interrupted run is being written)."""
    if isinstance(sys.exc_info()[1], STOPS):
        return
    if _everywhere and threading.current_thread() is not threading.main_thread():
        raise type(_everywhere[0])(*_everywhere[0].args)
    if _pending:
        raise _pending.pop()


def take_pending() -> BaseException | None:
    """The stop request not yet honoured, if any, now honoured by the caller (at exit)."""
    return _pending.pop() if _pending else None


def seen(e: BaseException) -> None:
    """``e`` reached the code that ends the run: the request it carries is being honoured."""
    if isinstance(e, STOPS):
        _pending.clear()


def _unraisable(info) -> None:  # sys.unraisablehook
    if isinstance(info.exc_value, STOPS) and _pending:
        return  # a stop request dropped in a callback: kept, and honoured (no traceback)
    sys.__unraisablehook__(info)


def install() -> None:
    """From now on SIGTERM and SIGINT raise, and each request is kept until honoured."""
    signal.signal(signal.SIGTERM, raise_terminated)
    signal.signal(signal.SIGINT, raise_interrupted)
    sys.unraisablehook = _unraisable


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt, each
    kept until honoured (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    previous_int = signal.signal(signal.SIGINT, raise_interrupted)
    sys.unraisablehook = _unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def reason(e: BaseException) -> str:
    """Why a run stopped, in a line."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (Ctrl-C / SIGINT)"
    if isinstance(e, Orphaned):
        return str(e)
    if isinstance(e, Terminated):
        return "terminated (SIGTERM)"
    return f"{type(e).__name__}: {e}"[:5000]


def ending(e: BaseException, trace: str) -> tuple[str, str | None, str | None]:
    """How a run that ``e`` stops ends: (status, reason, traceback to keep).

    ``sys.exit(0)`` is no failure (FINISHED); Ctrl-C and SIGTERM end it KILLED with the reason;
    anything else FAILED with the reason and ``trace``.
    """
    if isinstance(e, SystemExit) and e.code in (0, None):
        return "FINISHED", None, None
    if isinstance(e, STOPS):
        return "KILLED", reason(e), None
    return "FAILED", reason(e), trace


def exit_code(e: BaseException) -> int:
    """The shell's status for a process stopped by ``e``: 128 + the signal's number."""
    return 128 + (signal.SIGINT if isinstance(e, KeyboardInterrupt) else signal.SIGTERM)


# The errors of the store (lrexp's own, and MLflow's, carried back from the tracking process).
STORE_ERRORS = {"StoreLocked", "StoreError", "TrackerError", "MlflowException", "OperationalError"}


def store_failure(e: BaseException) -> bool:
    """Whether ``e`` is the store's failure (reported in a line) rather than a bug in lrexp."""
    notes = "".join(getattr(e, "__notes__", []))
    return type(e).__name__ in STORE_ERRORS or "(in lrexp's tracking process)" in notes


def one_line(e: BaseException) -> str:
    """The gist of ``e`` in a line: for a database's error wrapped by SQLAlchemy and MLflow
    (statements, parameters, advice), the database's own words ("database or disk is full")."""
    text = str(e)
    found = re.search(r"\((?:sqlite3|psycopg2?|pymysql|MySQLdb)\.\w+\) ([^\n\[]+)", text)
    if found:
        return found.group(1).strip()
    lines = [s for s in text.splitlines() if s.strip() and not s.startswith("(raised as")]
    return lines[0].strip() if lines else type(e).__name__
