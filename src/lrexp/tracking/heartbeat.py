"""A run's heartbeat: the tag `lrexp.heartbeat` stamped while the process that owns the run lives,
so that `python -m lrexp.runs reap` can tell a dead run (SIGKILL, power loss) from a live one.

A sweep's parent also names the process that launched it (the tag `lrexp.launcher`: host, pid
and the pid's start time, :func:`owner`): on that host, any lrexp process can tell at once,
without waiting for the heartbeat to go stale, that the launcher is gone (:func:`owner_gone`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lrexp.tracking import store_file

HEARTBEAT_S = float(os.environ.get("LREXP_HEARTBEAT_S", "10"))  # seconds between heartbeats
OPEN_RUNS: set[object] = (
    set()
)  # the runs this process has open (lifecycle.run), being made or ended


class Heartbeat:
    """A daemon thread that stamps ``lrexp.heartbeat`` on a run while the process lives (and,
    given ``alive``, while it says the run's training process does).

    SIGKILL, OOM and power loss cannot be caught; a run whose heartbeat went stale is dead, and
    ``python -m lrexp.runs reap`` marks it KILLED.
    """

    def __init__(
        self,
        uri: str,
        run_id: str,
        every: float = HEARTBEAT_S,
        alive: Callable[[], bool] | None = None,
    ):
        from mlflow.tracking import MlflowClient  # here: a sweep's launcher need not import it

        self.client, self.run_id, self.every = MlflowClient(uri), run_id, every
        self.alive = alive or (lambda: True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="lrexp-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            if not self.alive():  # its training process is gone or silent: let it go stale
                continue
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


OWNER_TAG = "lrexp.launcher"  # "<host> <pid> <pid's start time>" of a sweep's launching process
HOLDER_TAG = "lrexp.held_by"  # the same, of the process that opened a run (and would end it)


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is no such
    process, or it has exited (a zombie), or there is no /proc to ask."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def owner(pid: int | None = None) -> str:
    """The value of :data:`OWNER_TAG` naming process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()} {pid} {_started(pid) or '?'}"


def owner_gone(value: str) -> bool:
    """Whether the process that :func:`owner` named is certainly gone: on this host, its pid
    is free or now another process's. False where that cannot be told (another host)."""
    host, pid, started = [*value.split(), "", "", ""][:3]
    if host != socket.gethostname() or not pid.isdigit() or started == "?":
        return False
    return _started(int(pid)) != started


def reap_orphaned_sweeps(uri: str) -> list[str]:
    """End KILLED, with the reason, each RUNNING sweep parent of a SQLite store whose launching
    process is gone (on this host: see :func:`owner_gone`), and first its RUNNING children whose
    holding process (:data:`HOLDER_TAG`) is gone too; return the parents' ids. With sqlite3
    alone, in about a millisecond: every lrexp process runs it as it first opens a store (train,
    compare, reproduce, ``runs``), so a SIGKILLed sweep's parent is ended by the next command,
    without waiting for its heartbeat to go stale."""
    path = store_file.sqlite_path(uri)
    if path is None or not path.is_file():
        return []
    # a store locked by another process: skipped (housekeeping waits for nobody)
    with contextlib.closing(sqlite3.connect(path, timeout=0.5)) as db:
        found = db.execute(
            "SELECT t.run_uuid, t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
            "WHERE t.key = ? AND r.status = 'RUNNING'",
            (OWNER_TAG,),
        ).fetchall()
        dead = [(run_id, who) for run_id, who in found if owner_gone(who)]
        held = {parent: _held_children(db, parent) for parent, _ in dead}
    if not dead:
        return []
    ended = []
    with contextlib.closing(sqlite3.connect(path, timeout=20, isolation_level=None)) as db:
        for children in held.values():
            for child, holder in children:
                why = f"orphaned: the process that held it (pid {holder.split()[1]}) is gone"
                _end_killed(db, child, why)
        for parent, who in dead:
            why = _orphan_reason(db, parent, who)
            if _end_killed(db, parent, why):
                print(f"lrexp: sweep run {parent} ended KILLED: {why}", file=sys.stderr)
                ended.append(parent)
    return ended


def _end_killed(db: sqlite3.Connection, run_id: str, why: str) -> bool:
    """End ``run_id`` KILLED with the reason ``why``, in one transaction, if it is RUNNING
    still (another process may be ending it at the same moment); return whether it was."""
    db.execute("BEGIN IMMEDIATE")
    try:
        ended = db.execute(
            "UPDATE runs SET status = 'KILLED', end_time = ? "
            "WHERE run_uuid = ? AND status = 'RUNNING'",
            (int(time.time() * 1000), run_id),
        ).rowcount
        if ended:
            db.execute(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                ("lrexp.failure_reason", why, run_id),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return bool(ended)


def _held_children(db: sqlite3.Connection, parent: str) -> list[tuple[str, str]]:
    """The RUNNING children of ``parent`` whose holding process is gone, with its name."""
    rows = db.execute(
        "SELECT r.run_uuid, h.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
        "JOIN tags h ON h.run_uuid = r.run_uuid AND h.key = ? "
        "WHERE t.key = 'mlflow.parentRunId' AND t.value = ? AND r.status = 'RUNNING'",
        (HOLDER_TAG, parent),
    ).fetchall()
    return [(run_id, holder) for run_id, holder in rows if owner_gone(holder)]


def _orphan_reason(db: sqlite3.Connection, parent: str, who: str) -> str:
    """Why a sweep's parent is ended: its launcher is gone; its jobs' runs, and those missing."""
    host, pid = who.split()[:2]
    children = db.execute(
        "SELECT r.status, count(*) FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
        "WHERE t.key = 'mlflow.parentRunId' AND t.value = ? GROUP BY r.status",
        (parent,),
    ).fetchall()
    total = db.execute(
        "SELECT value FROM tags WHERE key = 'lrexp.sweep_jobs' AND run_uuid = ?", (parent,)
    ).fetchone()
    made = sum(n for _, n in children)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(children)) or "none"
    counts += " at the time" if any(status == "RUNNING" for status, _ in children) else ""
    jobs = f"{made} of {total[0]} jobs have a child run" if total else f"{made} child run(s)"
    missing = f", {int(total[0]) - made} never started" if total else ""
    return (
        f"orphaned: the sweep's launcher (pid {pid} on {host}) is gone: {jobs} ({counts}){missing}"
    )
