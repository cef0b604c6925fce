"""A hostile world for sweeps: a vmap and a joblib sweep's launcher stopped (SIGINT, SIGTERM) or
killed (SIGKILL) while training, while logging the children and at the parent's end.

Every cell runs ``python -m lrexp.train -m`` as a subprocess against a real SQLite store, reaches
its phase through lrexp's test hook (:mod:`lrexp.tracking.hooks`; ``sweep-end`` is the sweep's
summary), delivers the signal to the launcher alone, and reads the store back: the statuses and
reasons, the curves kept, nothing RUNNING once the next lrexp command has opened the store, no
process of the sweep left, and the exit within a bound. The default run takes two cells;
the others are marked ``full`` (CI's second pass, ``CI_FULL=1 python -m pytest -m full``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrexp.tracking import channel, heartbeat, lifecycle

assert lifecycle.init_store  # this process's MLflow creates stores under lrexp's lock too

FULL = os.environ.get("LREXP_FULL_MATRIX") == "1" or os.environ.get("CI_FULL") == "1"
EXIT_S = 30  # a stopped launcher has exited within this (a loaded machine; workers' grace 15 s)
GONE_S = 30  # a killed launcher's workers and tracking processes have exited within this
LRS = ("0.001", "0.002", "0.003")
REASONS = {"SIGINT": "interrupted (Ctrl-C / SIGINT)", "SIGTERM": "terminated (SIGTERM)"}
ORPHAN = "orphaned: the sweep's launcher (pid"


def launch(cwd: Path, launcher: str, pause: str, jobs: int) -> subprocess.Popen:
    """A sweep over ``jobs`` learning rates in ``cwd`` (its own process group), paused at
    ``pause``; output to files in ``cwd``."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LREXP_HEARTBEAT_S": "0.5",
        "LREXP_TEST_PAUSE_AT": pause,
        "LREXP_TEST_PAUSE_DIR": str(cwd),
    }
    args = [sys.executable, "-m", "lrexp.train", "-m", f"hydra/launcher={launcher}"]
    if launcher == "joblib":
        args.append("hydra.launcher.n_jobs=2")  # (with 1, joblib runs the jobs in this process)
    args += [
        "train.epochs=3",
        "data.n=200",
        "tracking.log_model=false",
        f"optimizer.lr={','.join(LRS[:jobs])}",
        f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}",
        "tracking.experiment=hostile-sweeps",
        f"hydra.sweep.dir={cwd / 'multirun'}",
    ]
    out, err = (open(cwd / f"{name}.txt", "w") for name in ("stdout", "stderr"))  # noqa: SIM115
    with out, err:
        return subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )


def wait_paused(cwd: Path, phase: str, proc: subprocess.Popen, within: float = 240) -> None:
    marker, end = cwd / f"{phase}.paused", time.monotonic() + within
    while not marker.exists():
        stderr = (cwd / "stderr.txt").read_text()
        assert proc.poll() is None, f"exited {proc.returncode} before {phase}: {stderr[-3000:]}"
        assert time.monotonic() < end, f"never reached {phase}: {stderr[-3000:]}"
        time.sleep(0.05)


def group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies are gone)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def all_gone(pgid: int, within: float) -> list[int]:
    end = time.monotonic() + within
    while group(pgid) and time.monotonic() < end:
        time.sleep(0.1)
    return group(pgid)


def sweep(cwd: Path) -> tuple:
    """(parent, children) of the store's only sweep."""
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in found if r.data.tags.get("lrexp.sweep") == "true"]
    return parent, [r for r in found if r is not parent]


def settled_children(cwd: Path, within: float = 30) -> None:
    """Wait until no child is RUNNING (a tracking process may still be ending one); read with
    sqlite3, so that this process's MLflow, opening the store, reaps nothing before the next
    command does."""
    end = time.monotonic() + within
    query = "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid"
    query += " WHERE t.key = 'mlflow.parentRunId' AND r.status = 'RUNNING'"
    while time.monotonic() < end:
        with contextlib.closing(sqlite3.connect(cwd / "mlflow.db")) as db:
            if db.execute(query).fetchone()[0] == 0:
                return
        time.sleep(0.2)


def next_command(cwd: Path) -> subprocess.CompletedProcess:
    """The next lrexp command on the store: ``runs reap`` with its default staleness (120 s),
    which reaps nothing this young by heartbeat alone."""
    return subprocess.run(
        [sys.executable, "-m", "lrexp.runs", "reap"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def curve(cwd: Path, run_id: str) -> list:
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    return MlflowClient(uri).get_metric_history(run_id, "loss/train_mse")


# --- the matrix -----------------------------------------------------------------------------------
SIGNALS = ("SIGINT", "SIGTERM", "kill")  # kill: SIGKILL of the launcher alone
PHASES = {"vmap": ("training", "curves", "sweep-end"), "joblib": ("training", "sweep-end")}
SUBSET = {("vmap", "training", "SIGTERM"), ("joblib", "training", "kill")}
CELLS = [
    pytest.param(
        launcher,
        phase,
        sig,
        marks=[] if (launcher, phase, sig) in SUBSET else [pytest.mark.full],
        id=f"{launcher}-{phase}-{sig}",
    )
    for launcher, phases in PHASES.items()
    for phase in phases
    for sig in SIGNALS
]


@pytest.mark.parametrize(("launcher", "phase", "sig"), CELLS)
def test_a_stopped_or_killed_sweep_ends_in_bounded_time_and_leaves_nothing_behind(
    tmp_path, launcher, phase, sig
):
    # joblib: one job in the default run (one worker trains), two in the full one
    jobs = 3 if launcher == "vmap" else (2 if FULL else 1)
    proc = launch(tmp_path, launcher, phase, jobs)
    wait_paused(tmp_path, phase, proc)
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL if sig == "kill" else getattr(signal, sig))
    if not (launcher == "joblib" and sig == "kill"):  # (a worker's watchdog ends its own wait:
        (tmp_path / f"{phase}.go").touch()  # released sooner, its job could finish unstopped)
    code = proc.wait(timeout=EXIT_S)
    took = time.monotonic() - sent
    stderr = (tmp_path / "stderr.txt").read_text()
    assert all_gone(proc.pid, GONE_S) == [], "processes of the sweep outlived it"
    if sig == "kill":
        assert code == -signal.SIGKILL
    else:
        assert code == 128 + getattr(signal, sig), stderr[-3000:]
        assert stderr.strip().splitlines()[-1].startswith("lrexp: stopped:"), stderr[-3000:]
        assert took < EXIT_S
    settled_children(tmp_path)
    reaped = next_command(tmp_path)
    assert reaped.returncode == 0, reaped.stderr
    if sig == "kill" and launcher == "vmap":  # (a joblib sweep's workers end its parent)
        assert "ended KILLED: orphaned: the sweep's launcher" in reaped.stderr, reaped.stderr
    parent, children = sweep(tmp_path)
    statuses = {c.info.status for c in children} | {parent.info.status}
    assert "RUNNING" not in statuses, [(c.info.run_name, c.info.status) for c in children]
    assert parent.info.status == "KILLED"
    reason = parent.data.tags["lrexp.failure_reason"]
    if sig == "kill":
        assert reason.startswith(f"{ORPHAN} {proc.pid} on {socket.gethostname()}) is gone")
    else:
        assert reason.startswith(REASONS[sig]), reason
    check_children(tmp_path, launcher, phase, sig, jobs, children, reason)


def check_children(cwd, launcher, phase, sig, jobs, children, reason) -> None:
    """The children a cell leaves, and what the parent's reason counts of them."""
    killed = [c for c in children if c.info.status == "KILLED"]
    if phase == "sweep-end":  # every job had ended: only the summary is missing
        assert [c.info.status for c in children] == ["FINISHED"] * jobs
        if sig != "kill":
            assert reason.endswith("while summarizing the sweep")
        else:
            assert f"{jobs} FINISHED" in reason
        return
    expected = channel.ORPHANED if launcher == "vmap" else ORPHAN
    for c in killed:
        assert c.data.tags["lrexp.failure_reason"].startswith(REASONS.get(sig, expected))
    if launcher == "vmap" and sig != "kill":
        counted = "training" if phase == "training" else "logging the children"
        left = "never started" if phase == "training" else "never logged"
        made = len(children)
        assert f"while {counted}: {made} of {jobs} jobs have a child run" in reason, reason
        assert reason.endswith(f"{jobs - made} {left}")
    if launcher == "vmap" and phase == "training" and sig != "kill":
        assert len(killed) == jobs  # every member of the batch in flight, with its curve so far
        for c in killed:
            assert len(curve(cwd, c.info.run_id)) >= 1
            assert "run.n_train" in c.data.params
    if launcher == "vmap" and phase == "training" and sig == "kill":
        assert children == [] and reason.endswith(
            f"0 of {jobs} jobs have a child run (none), {jobs} never started"
        )
    if launcher == "vmap" and phase == "curves" and sig != "kill":
        # stopped as the batch of children was about to be stored in one call: each is stored
        # alone instead, KILLED, with its whole curve (every epoch and the start)
        assert len(killed) == len(children) == jobs
        assert all(len(curve(cwd, c.info.run_id)) == 4 for c in children)
    if launcher == "vmap" and phase == "curves" and sig == "kill":
        assert children == []  # the batch's records died with the launcher, unsent
    if launcher == "joblib":
        assert 1 <= len(killed) == len(children)  # the job(s) in flight, in the workers


# --- the pieces, in process -----------------------------------------------------------------------
def test_a_launcher_is_gone_once_its_pid_is_free_or_another_processs():
    me = heartbeat.owner()
    assert not heartbeat.owner_gone(me)
    child = subprocess.Popen(["sleep", "30"])
    named = heartbeat.owner(child.pid)
    assert not heartbeat.owner_gone(named)
    child.kill()
    child.wait()
    assert heartbeat.owner_gone(named)
    host, pid, started = me.split()
    assert heartbeat.owner_gone(f"{host} {pid} {int(started) + 1}")  # the pid, reused
    assert not heartbeat.owner_gone(f"elsewhere {pid} 1")  # another host: cannot tell


def test_the_next_command_reaps_a_dead_launchers_sweep_and_no_live_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lifecycle.init_store(uri)
    exp = lifecycle.experiment_id(uri, "reap")
    child = subprocess.Popen(["sleep", "30"])
    named = heartbeat.owner(child.pid)
    dead = lifecycle.create_run(
        uri, exp, "dead", {heartbeat.OWNER_TAG: named, "lrexp.sweep_jobs": "5"}
    )
    child.kill()
    child.wait()
    live = lifecycle.create_run(uri, exp, "live", {heartbeat.OWNER_TAG: heartbeat.owner()})
    plain = lifecycle.create_run(uri, exp, "plain", {})
    finished = lifecycle.create_run(uri, exp, "done", {"mlflow.parentRunId": dead})
    lifecycle.end_run(uri, finished, "FINISHED")
    running = lifecycle.create_run(uri, exp, "running", {"mlflow.parentRunId": dead})
    held = lifecycle.create_run(  # held by the dead launcher: ended with it
        uri, exp, "held", {"mlflow.parentRunId": dead, heartbeat.HOLDER_TAG: named}
    )
    assert lifecycle.reap_orphaned_sweeps(uri) == [dead]
    client = MlflowClient(uri)
    status = {r: client.get_run(r).info.status for r in (dead, live, plain, running, held)}
    assert status == {
        dead: "KILLED", live: "RUNNING", plain: "RUNNING", running: "RUNNING", held: "KILLED"
    }  # fmt: skip
    why = client.get_run(dead).data.tags["lrexp.failure_reason"]
    assert why == (
        f"orphaned: the sweep's launcher (pid {child.pid} on {socket.gethostname()}) is gone: "
        "3 of 5 jobs have a child run (1 FINISHED, 1 KILLED, 1 RUNNING at the time), "
        "2 never started"
    )
    why = client.get_run(held).data.tags["lrexp.failure_reason"]
    assert why == f"orphaned: the process that held it (pid {child.pid}) is gone"
    assert lifecycle.reap_orphaned_sweeps(uri) == []  # once
