"""A sweep's worker processes (joblib's) end with their launcher, and end their runs first.

SIGKILL of the launcher: each worker's watchdog thread sees it gone (its pid free, or another
process's), stops the job in flight as SIGTERM would (its run ends KILLED, with its curve so far
and the reason "orphaned: …"), ends the sweep's parent run, and exits.

SIGINT or SIGTERM of the launcher: before the stop reaches joblib (which SIGKILLs its workers,
leaving their runs RUNNING), the launcher hands it on to its workers and waits, a bounded time,
for them to end their runs and exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from lrexp.tracking import heartbeat, signals

ENV_LAUNCHER = "LREXP_SWEEP_LAUNCHER"  # the launching process (heartbeat.owner): workers watch it
WATCH_S = 0.5  # how often a worker looks for its launcher
GRACE_S = float(os.environ.get("LREXP_WORKER_GRACE_S", "15"))  # for a worker to end its run
_watching: list[threading.Thread] = []


def watch_launcher() -> None:
    """In a worker process of a sweep (a child of its launcher): start the watchdog (once).
    Nothing in the launcher itself (the basic launcher runs its jobs in its own process), nor in
    a job that is no child of it (a SLURM job outlives its submitting process by design)."""
    launcher = os.environ.get(ENV_LAUNCHER, "")
    if str(os.getppid()) not in launcher.split()[1:2] or _watching:
        return
    _watching.append(threading.Thread(target=_watch, args=(launcher,), daemon=True))
    _watching[0].start()


def _watch(launcher: str) -> None:
    """Exit once a stop request has reached this worker and its run (if any) has ended, or
    once the launcher is gone, after ending the job's run and the sweep's parent."""
    while not heartbeat.owner_gone(launcher):
        time.sleep(WATCH_S)
        if signals.STOP_ASKED.is_set() and not heartbeat.OPEN_RUNS:  # the launcher's stop
            os._exit(128 + signal.SIGTERM)
    pid = launcher.split()[1]
    for idle in _marked(Path("/proc").glob("[0-9]*"), signal.SIGTERM, idle=True):
        with contextlib.suppress(OSError):  # workers without a job have no watchdog
            os.kill(idle, signal.SIGTERM)  # (and SIGTERM's default action)
    signals.orphan(f"orphaned: the sweep's launcher (pid {pid}) is gone; its workers stop with it")
    os.kill(os.getpid(), signal.SIGTERM)  # the job's run, if one is open, ends KILLED with why
    deadline = time.monotonic() + GRACE_S
    while heartbeat.OPEN_RUNS and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(Exception):
        heartbeat.reap_orphaned_sweeps(os.environ.get("LREXP_SWEEP_URI", ""))
    os._exit(128 + signal.SIGTERM)


def stop_handler(signum: int, frame) -> None:
    """The launcher's SIGINT/SIGTERM handler: hand the stop on to the workers, wait (at most
    :data:`GRACE_S`) for them to end their runs and exit, then stop here as well."""
    workers = _workers(signum)
    # Ctrl-C at a terminal reached the workers too: a second one would cut their records short
    for pid in [] if signum == signal.SIGINT and _from_terminal() else workers:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)
    busy = [pid for pid in workers if _busy(pid)]  # in a job: it ends its run, then exits
    deadline = time.monotonic() + GRACE_S
    while busy and time.monotonic() < deadline:
        time.sleep(0.05)
        busy = [pid for pid in busy if heartbeat._started(pid) is not None]
    if signum == signal.SIGINT:
        signals.raise_interrupted(signum, frame)
    signals.raise_terminated(signum, frame)


def install() -> None:
    """In the launcher (main thread only): stops are handed on to its workers."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_handler)
        signal.signal(signal.SIGINT, stop_handler)


def _workers(signum: int) -> list[int]:
    """This process's child processes that are workers of its sweep and do not ignore
    ``signum`` (joblib's resource tracker does)."""
    me = os.getpid()
    children = [
        Path(f"/proc/{pid}")
        for task in Path(f"/proc/{me}/task").glob("*/children")
        for pid in task.read_text().split()
    ]
    return _marked(children, signum)


def _marked(procs, signum: int, *, idle: bool = False) -> list[int]:
    """Those of the processes ``procs`` (their /proc folders) that carry this sweep's launcher
    in their environment, other than this one, and do not ignore ``signum``; with ``idle``,
    only those that leave it to its default action (a worker without a job)."""
    mark = f"{ENV_LAUNCHER}={os.environ.get(ENV_LAUNCHER, '')}".encode()
    found = []
    for proc in procs:
        with contextlib.suppress(OSError, ValueError):
            pid = int(proc.name)
            if pid == os.getpid() or mark not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            ignored, caught = _masks(pid)
            if not ignored >> (signum - 1) & 1 and not (idle and caught >> (signum - 1) & 1):
                found.append(pid)
    return found


def _masks(pid: int) -> tuple[int, int]:
    """The signals process ``pid`` ignores and those it catches (bit n-1: signal n)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["SigIgn"], 16), int(fields["SigCgt"], 16)


def _busy(pid: int) -> bool:
    """Whether worker ``pid`` runs a job (lrexp catches SIGTERM there, and only there)."""
    with contextlib.suppress(OSError, KeyError, ValueError):
        return bool(_masks(pid)[1] >> (signal.SIGTERM - 1) & 1)
    return False


def _from_terminal() -> bool:
    """Whether this process is in a terminal's foreground group (a SIGINT then came from the
    terminal's Ctrl-C, which the whole group received)."""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False
