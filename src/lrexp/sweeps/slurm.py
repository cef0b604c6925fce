"""``hydra/launcher=slurm`` (``hydra_plugins.lrexp_launcher.slurm_launcher``): wait on a SLURM
job array so that a lost job ends the sweep.

submitit waits on each job in turn and learns a job's end only from ``sacct``: a job cancelled
(``scancel``), timed out or killed with its node leaves it waiting (forever without accounting),
and when it finally raises, the array's other tasks keep running. Here the launching process
polls the whole array through ``squeue`` (slurmctld's own view, with or without accounting; then
``sacct`` for jobs squeue has forgotten). When a job ends without a result, it cancels the array's
other tasks (each ends its child run KILLED, as SIGTERM does), ends the sweep's parent run KILLED
(FAILED if the job failed rather than was cancelled) with a reason that names the job, and exits 1.

When the sweep itself is stopped (Ctrl-C, SIGTERM), it cancels its array too, and waits for the
jobs to end their runs KILLED before the parent is ended KILLED.

A job that SLURM requeues (preemption, ``scontrol requeue``) is not lost: its first attempt ends
its child KILLED, the rerun makes a new child (with ``tracking.skip_finished``, a finished config
is not trained again), and the sweep waits for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import filter_overrides

from lrexp.sweeps import callback
from lrexp.tracking import client, signals

POLL_S = 2.0  # how often the launching process asks slurmctld about the array
GRACE_S = 30.0  # a job COMPLETED but its result file not seen yet: how long to wait for it
GONE_S = 60.0  # a job that neither squeue nor sacct knows any more: how long until it is lost
# States in which a job may still produce its result (REQUEUED: it will run again).
WAITING = {
    *("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED"),
    *("REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"),
}


def results(jobs: Sequence[Any], overrides: list[list[str]]) -> list[Any]:
    """Each job's result (Hydra's ``JobReturn``), once all have one; if one ends without, cancel
    the others, end the parent run with the reason and exit 1."""
    print(f"lrexp sweep: SLURM job array {array_id(jobs)}", flush=True)
    try:
        lost = wait_all(jobs)
    except BaseException:  # Ctrl-C, SIGTERM: the sweep stops, and so do its jobs
        subprocess.run(["scancel", array_id(jobs)], capture_output=True, timeout=60)
        settle(jobs)
        raise
    if lost is not None:
        give_up(jobs, *lost, overrides)
    return [j.results()[0] for j in jobs]


def in_job() -> None:
    """In a SLURM job, before Hydra sets the job up: SIGTERM (``scancel``, a requeue, the time
    limit) stops the job from now on, as it stops a run. submitit ignores SIGTERM in its jobs:
    one that arrived while the job started up would be lost, and the run it then starts would be
    killed (SIGKILL, after ``KillWait``) with its record left RUNNING."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signals.raise_terminated)


def array_id(jobs: Sequence[Any]) -> str:
    """The array's id: ``123`` for the tasks ``123_0``, ``123_1``, ..."""
    return str(jobs[0].job_id).split("_")[0]


def squeue_states(array: str) -> dict[str, str] | None:
    """Each task's state as slurmctld knows it (ended jobs too, for ``MinJobAge``), or None when
    slurmctld does not answer."""
    cmd = ["squeue", "-h", "-r", "--states=all", "-j", array, "-o", "%i %T"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


def wait_all(jobs: Sequence[Any]) -> tuple[int, str] | None:
    """Wait until every job has its result; or return (index, state) of the first job that ended
    without one."""
    pending = set(range(len(jobs)))
    ended_at: dict[int, float] = {}  # when a job was first seen ended (or unknown) without result
    while pending:
        states = squeue_states(array_id(jobs))
        for i in sorted(pending):
            job = jobs[i]
            if job.paths.result_pickle.exists():
                pending.discard(i)
                continue
            state = states.get(str(job.job_id)) if states is not None else None
            if state is None and states is not None:  # forgotten by slurmctld: ask sacct
                state = job.watcher.get_state(job.job_id, mode="standard").split(" ")[0]
                state = "" if state == "UNKNOWN" else state
            if state is None or state.upper() in WAITING:
                ended_at.pop(i, None)
                continue
            # COMPLETED: its result file may be late (a network filesystem); a job no one knows
            # any more may be between squeue and sacct; any other end has no result to come.
            grace = {"COMPLETED": GRACE_S, "": GONE_S}.get(state.upper(), POLL_S)
            first = ended_at.setdefault(i, time.monotonic())
            if time.monotonic() - first >= grace:
                return i, state or "gone from the queue"
        if pending:
            time.sleep(POLL_S)
    return None


def give_up(jobs: Sequence[Any], i: int, state: str, overrides: list[list[str]]) -> None:
    """Cancel the array's other tasks, end the parent run with the reason, exit 1."""
    job = jobs[i]
    others = [
        str(j.job_id) for k, j in enumerate(jobs) if k != i and not j.paths.result_pickle.exists()
    ]
    if others:
        subprocess.run(["scancel", array_id(jobs)], capture_output=True, timeout=60)
    what = " ".join(filter_overrides(overrides[i]))
    reason = f"SLURM job {job.job_id} (#{i}: {what}) ended {state} without a result"
    reason += f"; the sweep cancelled its other jobs {', '.join(others)}" if others else ""
    settle(jobs)
    end_parent(reason, "KILLED" if state.upper().startswith("CANCELLED") else "FAILED")
    print(f"lrexp: error: {reason}; log: {job.paths.stdout}", file=sys.stderr, flush=True)
    sys.exit(1)


def settle(jobs: Sequence[Any], timeout_s: float = 120.0) -> None:
    """Wait (bounded) until no task of the array runs: each cancelled one has ended its run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = squeue_states(array_id(jobs))
        if states is not None and not any(s.upper() in WAITING for s in states.values()):
            return
        time.sleep(POLL_S)


def end_parent(reason: str, status: str) -> None:
    """End the sweep's parent run ``status`` with ``reason`` (none when the sweep is untracked)."""
    callback.settle()
    parent, uri = os.environ.get(callback.ENV_PARENT), os.environ.get(callback.ENV_URI)
    if not parent or not uri:
        return
    tracking = client.calls()
    tracking.stop_heartbeat(parent)
    tracking.set_tags(uri, parent, {"lrexp.failure_reason": reason[:5000]})
    tracking.end_run(uri, parent, status)
